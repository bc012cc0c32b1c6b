"""civflow: declarative workflow-as-code for the Civitai orchestration API."""

from civflow.errors import CivflowError, Diagnostic, Location, PipelineInvalid

__all__ = ["CivflowError", "Diagnostic", "Location", "PipelineInvalid"]
__version__ = "0.1.0"
