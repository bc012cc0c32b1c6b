"""The one seam between civflow and the Civitai API: typed answers and the Backend protocol.

Everything above this module (the runner, the CLI) sees `WorkflowState` and
`StepState`, never raw httpx responses; each keeps the raw JSON in `raw` for the
fields civflow does not model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "TERMINAL",
    "Backend",
    "Download",
    "StepState",
    "WorkflowState",
]

# Statuses after which a workflow, step or job never changes again (civitai-api.md §4.1).
TERMINAL = frozenset({"succeeded", "failed", "expired", "canceled"})


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
    raw: Mapping[str, Any]

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
class WorkflowState:
    """A snapshot of one workflow: its status, Buzz cost and steps."""

    id: str | None
    status: str
    cost: float
    steps: tuple[StepState, ...]
    external_id: str | None
    raw: Mapping[str, Any]

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkflowState:
        cost = data.get("cost")
        total = _number(cost.get("total")) if isinstance(cost, Mapping) else _number(cost)
        steps = data.get("steps")
        workflow_id = data.get("id")
        external = data.get("externalId")
        return cls(
            id=workflow_id if isinstance(workflow_id, str) else None,
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
