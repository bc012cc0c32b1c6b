"""What a run reports as it goes; the CLI turns these into a live view or a line log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    CACHED = "cached"
    SKIPPED = "skipped"
    WAITING = "waiting"  # ready, waiting for a concurrency slot
    SUBMITTED = "submitted"
    ATTACHED = "attached"  # re-attached to a workflow submitted before a crash
    RUNNING = "running"  # a status update from the API
    DOWNLOADING = "downloading"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"

    @property
    def final(self) -> bool:
        return self in (Phase.CACHED, Phase.SKIPPED, Phase.SUCCEEDED, Phase.FAILED)


@dataclass(frozen=True)
class Event:
    instance: str
    phase: Phase
    status: str | None = None  # the API's status word, e.g. "processing"
    detail: str | None = None
    cost: float | None = None
    workflow_id: str | None = None
    progress: float | None = None
    queue_position: int | None = None


Reporter = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """A reporter that drops everything (library use, benchmarks)."""
