"""The one seam to the Civitai API: the Backend protocol, its typed answers, and the client."""

from civflow.backends.base import TERMINAL, Backend, Download, StepState, WorkflowState
from civflow.backends.civitai import DEFAULT_BASE_URL, CivitaiClient

__all__ = [
    "DEFAULT_BASE_URL",
    "TERMINAL",
    "Backend",
    "CivitaiClient",
    "Download",
    "StepState",
    "WorkflowState",
]
