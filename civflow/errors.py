"""The one exception tree of civflow, and the source locations errors point at.

    CivflowError                      everything civflow raises on purpose
    ├── UsageError                    a bad command line (unknown --var, bad flag value)
    │   └── MissingExtra              a feature whose optional packages are not installed
    ├── FileAccessError               a file that exists but cannot be read or written
    │   └── UnsafePath                a path civflow would write resolves outside its folder
    ├── PipelineNotFound              the pipeline file (or an include) does not exist
    ├── PipelineInvalid               one or more located Diagnostics about a pipeline file
    ├── TemplateFailed                a template did not parse or render (placed by the caller)
    ├── ApiError                      the Civitai API (or the emulator) said no
    │   ├── ApiRejected               400: the body is invalid
    │   ├── AuthenticationError       401, 403 other than funds, or no key at all
    │   ├── ApiNotFound               404: workflow, blob or AIR unknown
    │   ├── InsufficientFunds         403 for Buzz
    │   ├── RateLimited               429 after retries
    │   └── ServiceUnavailable        5xx or network failure after retries
    │       └── ApiProtocolError      an answer not to trust: too big/deep, redirect, no id
    ├── SpendingRefused               over --max-cost, or not confirmed
    ├── RunLocked                     another run of the same pipeline holds its lock
    ├── RemoteError                   the artifact remote (civflow push/pull) cannot be used
    │   ├── RemoteUnreachable         no answer, no such bucket/folder, storage lib missing
    │   ├── RemoteAccessDenied        no credentials, or the credentials may not do this
    │   └── RemoteCorrupt             objects whose bytes do not hash to their names
    └── StepsFailed                   instances failed, expired or were canceled

Exceptions never print; they build their own message from keyword-only fields.
Mapping them to exit codes is the CLI's job (`civflow.cli.exit_code_for`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """A 1-based line and column in a file."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Severity(Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a pipeline file: where, what, and how to fix it."""

    message: str
    location: Location | None = None
    hint: str | None = None
    severity: Severity = Severity.ERROR
    # The text of the offending line, when the file is known; filled by the loader.
    source_line: str | None = field(default=None, compare=False)

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    def render(self) -> str:
        """`file:line:col: message`, the line with a caret under the column, and the hint."""
        where = f"{self.location}: " if self.location else ""
        prefix = "" if self.is_error else "warning: "
        lines = [f"{where}{prefix}{self.message}"]
        if self.source_line is not None and self.location is not None:
            text = self.source_line.rstrip("\n").expandtabs(1)
            lines.append(f"    {text}")
            lines.append("    " + " " * max(self.location.col - 1, 0) + "^")
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)


class CivflowError(Exception):
    """Root of every error civflow raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class UsageError(CivflowError):
    """The command line asks for something that cannot be done."""


# The optional extras, and the top-level modules each brings: the base install validates,
# plans and runs against the real API; these are for the rest.
EXTRAS: dict[str, tuple[str, ...]] = {
    "emulator": ("starlette", "uvicorn", "PIL", "av"),
    "report": ("PIL", "av"),
    "s3": ("fsspec", "s3fs"),
    "gcs": ("fsspec", "gcsfs"),
    "azure": ("fsspec", "adlfs"),
}


class MissingExtra(UsageError):
    """A feature whose packages are an optional extra this install does not have."""

    def __init__(self, *, feature: str, extra: str, module: str) -> None:
        super().__init__(f"{feature} needs civflow's optional '{extra}' packages "
                         f"({module} is not installed)",
                         hint=f"pip install 'civflow[{extra}]'")
        self.extra = extra
        self.module = module

    @classmethod
    def check(cls, exc: ImportError, *, feature: str, extra: str) -> MissingExtra:
        """The error for `exc` when it is one of `extra`'s packages that is missing;
        any other ImportError (a bug, not an install) is raised as it is."""
        top = (exc.name or "").split(".")[0]
        if top not in EXTRAS[extra]:
            raise exc
        return cls(feature=feature, extra=extra, module=top)


class FileAccessError(CivflowError):
    """A file exists but cannot be read or written."""

    def __init__(self, *, path: str, reason: str) -> None:
        super().__init__(f"{path}: cannot access: {reason}")
        self.path = path


class UnsafePath(FileAccessError):
    """A path built from names civflow was given would land outside the folder it belongs in."""

    def __init__(self, *, path: str, base: str, action: str = "write") -> None:
        super().__init__(path=path, reason=f"resolves outside {base}; refusing to {action} it")
        self.base = base


class PipelineNotFound(CivflowError):
    def __init__(self, *, path: str) -> None:
        super().__init__(f"{path}: no such pipeline file")
        self.path = path


class PipelineInvalid(CivflowError):
    """One or more errors located in a pipeline file (warnings may ride along)."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.is_error]
        first = errors[0] if errors else self.diagnostics[0]
        super().__init__(first.render())

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


class TemplateFailed(CivflowError):
    """A template could not be parsed or rendered; `line` is 1-based inside the template.

    Raised by `civflow.template`; the checks that know where the template stands in the
    pipeline file turn it into a located `PipelineInvalid`.
    """

    def __init__(self, message: str, *, line: int = 1, hint: str | None = None,
                 file: str | None = None, col: int = 1) -> None:
        super().__init__(message, hint=hint)
        self.line = line
        # Set when the error is inside an included template: `line` and `col` are then
        # in that file, not in the pipeline's template.
        self.file = file
        self.col = col


class ApiError(CivflowError):
    """The API answered with an error, or could not be reached."""

    def __init__(
        self, message: str, *, status: int | None = None, detail: object = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.detail = detail


class ApiRejected(ApiError):
    """400: the API found the request body invalid; `detail` holds its `errors` map."""


class AuthenticationError(ApiError):
    """No key, a wrong key, or a 403 that is not about money."""


class ApiNotFound(ApiError):
    """404: an unknown workflow, blob or AIR."""


class InsufficientFunds(ApiError):
    """403 for lack of Buzz."""


class RateLimited(ApiError):
    """429, still after every retry."""


class ServiceUnavailable(ApiError):
    """5xx or a network failure, still after every retry."""


class ApiProtocolError(ServiceUnavailable):
    """The API answered something civflow will not use: a body too big or too deeply
    nested, a redirect, a workflow without an id, a blob URL that is not http(s).

    A kind of `ServiceUnavailable` (the service is broken, the user's input is fine),
    so it ends a run with the same exit code; it is never retried.
    """


class SpendingRefused(CivflowError):
    """The plan costs more than allowed, or the user did not confirm."""


class RunLocked(CivflowError):
    """Another `civflow run` of the same pipeline is in progress (it holds the run lock)."""

    def __init__(self, *, pipeline: str, holder: str) -> None:
        super().__init__(f"another run of pipeline '{pipeline}' is in progress ({holder})",
                         hint="wait for it, or pass --wait to queue behind it")
        self.pipeline = pipeline
        self.holder = holder


class RemoteError(CivflowError):
    """The remote of `civflow push` / `pull` could not be used; `url` is printable
    (any user:password part is removed before it gets here)."""

    def __init__(self, message: str, *, url: str, hint: str | None = None) -> None:
        super().__init__(f"remote {url}: {message}", hint=hint)
        self.url = url


class RemoteUnreachable(RemoteError):
    """No answer from the remote's server, no such bucket or folder, or the storage
    library for its URL is not installed."""


class RemoteAccessDenied(RemoteError):
    """No credentials were found, or the ones found may not read or write there."""


class RemoteCorrupt(RemoteError):
    """Objects whose bytes do not hash to their names: reported, never adopted, and
    never silently overwritten."""

    def __init__(self, *, url: str, objects: Sequence[str], hint: str | None = None) -> None:
        names = ", ".join(objects[:5]) + (f" and {len(objects) - 5} more"
                                          if len(objects) > 5 else "")
        super().__init__(f"{len(objects)} object(s) do not match their sha256: {names}",
                         url=url, hint=hint)
        self.objects = tuple(objects)


class StepsFailed(CivflowError):
    """One or more step instances ended failed, expired or canceled."""

    def __init__(self, *, failed: Sequence[str], resume_hint: str | None = None) -> None:
        names = ", ".join(failed)
        super().__init__(f"{len(failed)} step instance(s) did not succeed: {names}",
                         hint=resume_hint)
        self.failed = tuple(failed)
