"""The one seam to the Civitai API: the Backend protocol, its typed answers, and the client."""

from civflow.client.base import TERMINAL, Backend, Download, StepState, WorkflowState
from civflow.client.civitai import DEFAULT_BASE_URL, CivitaiClient

__all__ = [
    "DEFAULT_BASE_URL",
    "TERMINAL",
    "Backend",
    "CivitaiClient",
    "Download",
    "StepState",
    "WorkflowState",
]
