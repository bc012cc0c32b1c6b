"""The one table from civflow errors to exit codes, and how errors are shown."""

from __future__ import annotations

from civflow import errors

# Most specific first: the first isinstance match wins.
_EXIT_CODES: tuple[tuple[type[errors.CivflowError], int], ...] = (
    (errors.UsageError, 2),
    (errors.PipelineInvalid, 2),
    (errors.ApiRejected, 2),
    (errors.FileAccessError, 1),
    (errors.AuthenticationError, 3),
    (errors.PipelineNotFound, 4),
    (errors.ApiNotFound, 4),
    (errors.ServiceUnavailable, 5),
    (errors.RateLimited, 6),
    (errors.StepsFailed, 7),
    (errors.InsufficientFunds, 8),
    (errors.SpendingRefused, 8),
    (errors.RunLocked, 9),
)


def exit_code_for(exc: errors.CivflowError) -> int:
    for kind, code in _EXIT_CODES:
        if isinstance(exc, kind):
            return code
    return 1


def render_error(exc: errors.CivflowError) -> str:
    text = exc.render()
    if isinstance(exc, errors.PipelineInvalid):
        return text
    return f"error: {text}"
