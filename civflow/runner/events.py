"""What a run reports as it goes, one typed Event at a time; the CLI shows them live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Phase(Enum):
    """What an Event says happened. The last three are about the whole run, not one
    instance: their `Event.instance` is "" and `Event.detail` says the rest."""

    CACHED = "cached"
    SKIPPED = "skipped"
    WAITING = "waiting"  # ready, waiting for a concurrency slot
    SUBMITTED = "submitted"
    ATTACHED = "attached"  # re-attached to a workflow submitted before a crash
    RUNNING = "running"  # a status update from the API
    DOWNLOADING = "downloading"  # fetching an instance's files (one that has any)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    LOCKED = "locked"  # another run of the pipeline holds its lock (detail: which); waiting
    RESUMED = "resumed"  # an interrupted run is carried on (detail: its run id)
    REMOTE = "remote"  # what pulling cached files from the project's remote did (detail)

    @property
    def final(self) -> bool:
        return self in (Phase.CACHED, Phase.SKIPPED, Phase.SUCCEEDED, Phase.FAILED)

    @property
    def of_run(self) -> bool:
        """Whether events of this phase are about the whole run (no instance)."""
        return self in (Phase.LOCKED, Phase.RESUMED, Phase.REMOTE)


@dataclass(frozen=True)
class Event:
    instance: str  # "" when `phase.of_run`
    phase: Phase
    status: str | None = None  # the API's status word, e.g. "processing"
    detail: str | None = None
    cost: float | None = None
    workflow_id: str | None = None
    progress: float | None = None
    queue_position: int | None = None


# Whatever hears a run's events: `civflow.arun(on_event=…)`, the CLI's live table.
Reporter = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """A reporter that drops everything (library use, benchmarks)."""
