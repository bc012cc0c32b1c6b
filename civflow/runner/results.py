"""What a run is told (RunOptions) and what it reports (RunResult, one InstanceResult each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from civflow.runner.deadlines import GRACE
from civflow.store.lockfile import Artifact

__all__ = ["InstanceResult", "RunOptions", "RunResult", "Status"]


@dataclass(frozen=True)
class RunOptions:
    concurrency: int = 8
    max_cost: float | None = None
    fail_fast: bool = False
    out_dir: Path | None = None  # default <root>/out
    wait_seconds: int = 30  # long-poll length per request (the API caps near 100 s)
    timeout_grace: float = GRACE  # past a step's own timeout, before civflow cancels it
    keep_stale: bool = False  # keep lockfile entries of instances a full run no longer has


class Status(StrEnum):
    """How an instance ended in a run. A `str`: `result.status == "failed"` holds."""

    SUCCEEDED = "succeeded"
    CACHED = "cached"  # paid for before: its files were restored, nothing submitted
    FAILED = "failed"
    EXPIRED = "expired"  # the API gave up on it
    CANCELED = "canceled"
    SKIPPED = "skipped"  # its `when` was false, a step it needs did not succeed, or the
    # run had stopped before its step began
    NOT_RUN = "not-run"  # ready, but the run stopped (the cost cap, fail-fast) before it
    # was submitted

    @property
    def failed(self) -> bool:
        """Failed, expired or canceled: it did not succeed (`reason` says why)."""
        return self in (Status.FAILED, Status.EXPIRED, Status.CANCELED)


@dataclass(init=False)
class InstanceResult:
    name: str
    step: str
    status: Status
    workflow_id: str | None = None
    cost: float | None = None
    reason: str | None = None
    artifacts: tuple[Artifact, ...] = ()

    def __init__(self, name: str, step: str, status: Status | str,
                 workflow_id: str | None = None, cost: float | None = None,
                 reason: str | None = None, artifacts: tuple[Artifact, ...] = ()) -> None:
        self.name = name
        self.step = step
        # The runner passes the API's word for a workflow that ended badly; one this
        # version does not know is still an instance that did not succeed.
        self.status = status if isinstance(status, Status) else _STATUS.get(status,
                                                                             Status.FAILED)
        self.workflow_id = workflow_id
        self.cost = cost
        self.reason = reason
        self.artifacts = artifacts


_STATUS = {status.value: status for status in Status}


@dataclass
class RunResult:
    run_id: str
    results: dict[str, InstanceResult] = field(default_factory=dict)
    spent: float = 0.0
    interrupted: bool = False
    budget_stop: str | None = None  # why the cap stopped the run
    lockfile: Path | None = None
    artifacts_base: Path | None = None  # artifact paths are relative to this folder
    out_dir: Path | None = None
    # Made on the emulator: previews, recorded under .civflow/previews; `spent` is what
    # the emulator pretended to charge, and nothing here is ever taken for paid work.
    preview: bool = False

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results.values() if r.status.failed]

    def count(self, status: Status | str) -> int:
        return sum(1 for r in self.results.values() if r.status == status)

    @property
    def files(self) -> dict[str, tuple[Path, ...]]:
        """Each instance's output files (absolute paths), for opening or display."""
        folder = self.artifacts_base or Path()
        return {name: tuple((folder / a.path).resolve() for a in r.artifacts)
                for name, r in self.results.items() if r.artifacts}

    def table(self) -> str:
        """One line per instance: status, cost and files; then the total spent."""
        width = max((len(n) for n in self.results), default=8)
        files = self.files
        lines = [f"{r.name:<{width}}  {r.status:<9} "
                 f"{'' if r.cost is None else f'{r.cost:g} Buzz':>10}  "
                 f"{', '.join(p.name for p in files.get(r.name, ())) or (r.reason or '')}"
                 for r in self.results.values()]
        lines.append(f"run {self.run_id}: spent {self.spent:g} Buzz")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
