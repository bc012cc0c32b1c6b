"""Which instances share a workflow: the one grouping decision `plan`, `render` and `run` use.

Pure: planned instances in, batches out. Instances of one step never depend on each
other, so a step's instances that run are packed, in plan order, into workflows of up
to `size` steps. Packing is deterministic (the same plan gives the same batches, so
the same batch `externalId`), and never waits to fill a batch: a step's batches are
formed the moment the step's instances are known. Instances of different steps are
not mixed, so one slow step type never holds up another's results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from civflow.plan import PlannedInstance

__all__ = ["DEFAULT_BATCH", "MAX_BATCH", "Batch", "apportion", "batch_size", "batches"]

# Steps per workflow when neither the pipeline nor `--batch` says (see docs/guide/batching.md).
DEFAULT_BATCH = 1
MAX_BATCH = 100  # the schema's bound: a body and a failure stay small


@dataclass(frozen=True)
class Batch:
    """One workflow: its instances, each a step named after the instance."""

    step: str
    members: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.step} × {len(self.members)}" if len(self.members) > 1 else self.members[0]


def batch_size(configured: int | None) -> int:
    """The batch size in force: the pipeline's key or `--batch`, else the default."""
    if configured is None:
        return DEFAULT_BATCH
    return max(1, min(MAX_BATCH, configured))


def batches(planned: Sequence[PlannedInstance], size: int) -> tuple[Batch, ...]:
    """The workflows the instances that run are submitted in: per step, in plan order,
    up to `size` each. Instances known only at run time (a fan-out placeholder, inputs
    that wait for upstream outputs) are packed by the same rule once they are known."""
    size = max(1, size)
    by_step: dict[str, list[str]] = {}
    for p in planned:
        if p.decision.runs and p.instance.resolved:
            by_step.setdefault(p.instance.step, []).append(p.name)
    out: list[Batch] = []
    for step, names in by_step.items():
        out += [Batch(step, tuple(names[i:i + size])) for i in range(0, len(names), size)]
    return tuple(out)


def apportion(total: float, estimates: Sequence[float | None]) -> list[float]:
    """A batch's charge split over its members, in proportion to their estimates (equal
    shares when unknown): whole Buzz when the total is whole, and the shares always sum
    to exactly the total, so the lockfile's costs add up to what was charged."""
    n = len(estimates)
    if n == 0:
        return []
    if not math.isfinite(total) or total <= 0:
        return [0.0] * n
    weights = [e if e is not None and math.isfinite(e) and e > 0 else 0.0 for e in estimates]
    if sum(weights) <= 0:
        weights = [1.0] * n
    scale = sum(weights)
    if float(total).is_integer():
        exact = [total * w / scale for w in weights]
        shares = [math.floor(x) for x in exact]
        left = int(total) - sum(shares)
        order = sorted(range(n), key=lambda i: (-(exact[i] - shares[i]), i))
        for i in order[:left]:
            shares[i] += 1
        return [float(s) for s in shares]
    shares_f = [round(total * w / scale, 4) for w in weights]
    shares_f[-1] = round(total - sum(shares_f[:-1]), 4)
    return shares_f
