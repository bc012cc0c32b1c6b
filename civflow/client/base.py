"""The one seam between civflow and the Civitai API: typed answers and the Backend protocol.

Everything above this module (the runner, the CLI) sees `WorkflowState` and
`StepState`, never raw httpx responses; each keeps the raw JSON in `raw` for the
fields civflow does not model, exactly as the API sent it. Texts meant for printing or
journaling (`WorkflowState.failure`) are scrubbed of the API key, cleaned of control
characters and capped in length here (`clean_text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from civflow.errors import ApiProtocolError
from civflow.origin import Origin

__all__ = [
    "REASON_LIMIT",
    "TERMINAL",
    "Backend",
    "Download",
    "Failure",
    "StepState",
    "WorkflowState",
    "clean_text",
    "remember_secret",
    "scrub",
]

# Statuses after which a workflow, step or job never changes again (civitai-api.md §4.1).
TERMINAL = frozenset({"succeeded", "failed", "expired", "canceled"})


# The longest failure reason handed on for printing or journaling.
REASON_LIMIT = 500
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


# The API keys of this process's clients: blanked from every text civflow shows.
_SECRETS: set[str] = set()


def remember_secret(secret: str) -> None:
    """Register a secret that `scrub` (and so `clean_text`) blanks from now on."""
    if secret:
        _SECRETS.add(secret)


def scrub(text: str) -> str:
    """`text` with every registered secret replaced by `<redacted>`: for what civflow
    prints, logs or journals as a diagnostic, never for data it uses or records."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "<redacted>")
    return text


def clean_text(text: str, limit: int = REASON_LIMIT) -> str:
    """A server-sent text made safe to print on one line: the API key blanked (`scrub`),
    control characters (terminal escapes, newlines) become spaces, runs of spaces one,
    and it is cut at `limit`."""
    text = " ".join(_CONTROL.sub(" ", scrub(text)).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _shown(state: object) -> str:
    """A state's repr with the API key blanked: outputs may echo it back."""
    parts = ", ".join(f"{f.name}={getattr(state, f.name)!r}" for f in fields(state)  # type: ignore[arg-type]
                      if f.repr)
    return scrub(f"{type(state).__name__}({parts})")


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True)
class StepState:
    """One step of a workflow as the API reported it."""

    name: str
    type: str
    status: str
    output: Mapping[str, Any] | None
    progress: float | None
    queue_position: int | None
    raw: Mapping[str, Any] = field(repr=False)  # as sent; repr shows the typed fields

    def __repr__(self) -> str:
        return _shown(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StepState:
        output = data.get("output")
        return cls(
            name=str(data.get("name") or ""),
            type=str(data.get("$type") or ""),
            status=str(data.get("status") or "unassigned"),
            output=output if isinstance(output, Mapping) else None,
            progress=_number(data.get("estimatedProgressRate")),
            queue_position=_queue_position(data.get("jobs")),
            raw=data,
        )


def _queue_position(jobs: object) -> int | None:
    """The smallest `queuePosition.precedingJobs` of the step's jobs, when the API gives one."""
    if not isinstance(jobs, list):
        return None
    found: list[int] = []
    for job in jobs:
        position = job.get("queuePosition") if isinstance(job, Mapping) else None
        preceding = position.get("precedingJobs") if isinstance(position, Mapping) else None
        if isinstance(preceding, int) and not isinstance(preceding, bool):
            found.append(preceding)
    return min(found) if found else None


@dataclass(frozen=True)
class Failure:
    """Why a workflow did not succeed, ready to print or journal.

    `reason` is the first job reason (or a step's output `errors`) the API gave,
    cleaned and at most `REASON_LIMIT` characters; `blocked` is True only when the
    API said so in structure, a job's `blockedReason`, a job `reason` that is exactly
    the code `blocked`, or a `blockedReason` on an output blob (civitai-api.md §4.3,
    §7, §10): never because some message happens to contain the word.
    """

    reason: str | None
    blocked: bool


def _jobs(step: StepState) -> Iterator[Mapping[str, Any]]:
    jobs = step.raw.get("jobs")
    if isinstance(jobs, list):
        yield from (job for job in jobs if isinstance(job, Mapping))


def _blob_blocked(output: object) -> bool:
    """Whether any blob object in a step output carries a non-empty `blockedReason`."""
    stack = [output]
    while stack:
        value = stack.pop()
        if isinstance(value, Mapping):
            if value.get("blockedReason"):
                return True
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


@dataclass(frozen=True)
class WorkflowState:
    """A snapshot of one workflow: its status, Buzz cost and steps."""

    id: str | None
    status: str
    cost: float
    steps: tuple[StepState, ...]
    external_id: str | None
    raw: Mapping[str, Any] = field(repr=False)  # as sent; repr shows the typed fields

    def __repr__(self) -> str:
        return _shown(self)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def malformed(self) -> str | None:
        """What makes this answer self-contradictory, or None when it is coherent.

        A workflow reported `succeeded` must have steps, and every one of them must
        have succeeded (the API rolls step statuses up into the workflow's). The
        executor treats a malformed terminal answer as a failed instance with this
        text as its reason, instead of collecting outputs that are not there.
        """
        if self.status != "succeeded":
            return None
        if not self.steps:
            return "the API reported the workflow succeeded but sent no steps"
        for step in self.steps:
            if step.status != "succeeded":
                name = clean_text(step.name, 100) or "?"
                return (f"the API reported the workflow succeeded but its step {name} is "
                        f"{clean_text(step.status, 40)}")
        return None

    def failure(self) -> Failure:
        """Why this workflow did not succeed (see `Failure`); `reason` is None when the
        API gave none. The texts are scrubbed of the API key by `clean_text`."""
        reason: str | None = None
        blocked = False
        for step in self.steps:
            for job in _jobs(step):
                why = job.get("blockedReason")
                if why:
                    blocked = True
                    reason = reason or str(why)
                code = job.get("reason")
                if code:
                    blocked = blocked or code == "blocked"
                    reason = reason or str(code)
            output = step.output or {}
            blocked = blocked or _blob_blocked(output)
            errors = output.get("errors")
            if reason is None and errors:
                reason = "; ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
        if reason is None:
            reason = self.malformed
        cleaned = clean_text(reason) if reason is not None else ""
        return Failure(cleaned or None, blocked)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, require_id: bool = True) -> WorkflowState:
        """The typed form of a `Workflow` answer.

        Raises `ApiProtocolError` when `require_id` and the answer has no string id:
        every real workflow has one, only a `whatif` answer may lack it
        (civitai-api.md §2.2), and without it civflow could neither poll nor cancel.
        """
        cost = data.get("cost")
        total = _number(cost.get("total")) if isinstance(cost, Mapping) else _number(cost)
        steps = data.get("steps")
        workflow_id = data.get("id")
        external = data.get("externalId")
        if require_id and not (isinstance(workflow_id, str) and workflow_id):
            raise ApiProtocolError(
                "the API answered a workflow without an id; civflow cannot follow it",
                hint="the service may be misbehaving; check the workflow list on civitai.com "
                     "before running again")
        return cls(
            id=workflow_id if isinstance(workflow_id, str) and workflow_id else None,
            status=str(data.get("status") or "unassigned"),
            cost=total or 0.0,
            steps=tuple(StepState.from_json(s) for s in steps if isinstance(s, Mapping))
            if isinstance(steps, list) else (),
            external_id=external if isinstance(external, str) else None,
            raw=data,
        )


@dataclass(frozen=True)
class Download:
    """Bytes fetched to `path` (a temp file the caller adopts), with their verified hash."""

    sha256: str
    size: int
    media_type: str | None
    path: Path


class Backend(Protocol):
    """What the runner needs from the API; `CivitaiClient` talks HTTP, tests may use the emulator.

    Errors are always `civflow.errors.ApiError` subclasses. `download` raises
    `AuthenticationError` with `status=403` when a signed URL has expired: the caller
    refreshes the blob (`refresh_blob`) and downloads the fresh URL.
    """

    @property
    def origin(self) -> Origin | None: ...

    async def identify(self) -> Origin: ...

    async def submit(self, template: Mapping[str, Any], *, wait: int = 0,
                     whatif: bool = False) -> WorkflowState: ...

    async def get(self, workflow_id: str, *, wait: int = 0) -> WorkflowState: ...

    async def query(self, *, tags: Sequence[str], take: int = 100,
                    cursor: str | None = None) -> tuple[list[WorkflowState], str | None]: ...

    async def cancel(self, workflow_id: str) -> None: ...

    async def delete(self, workflow_id: str) -> None: ...

    async def download(self, url: str, dest: Path) -> Download: ...

    async def refresh_blob(self, blob_id: str) -> Mapping[str, Any]: ...

    async def upload_blob(self, path: Path, media_type: str) -> Mapping[str, Any]: ...

    async def resource(self, air: str) -> Mapping[str, Any]: ...

    async def aclose(self) -> None: ...
