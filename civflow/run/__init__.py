"""Execute a planned pipeline: resume, check resources, estimate, ask, run, record."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from civflow import catalog
from civflow.backends.base import Backend
from civflow.errors import ApiNotFound, SpendingRefused
from civflow.plan import Plan, Prior, plan
from civflow.run.events import Event, Phase, Reporter, ignore
from civflow.run.executor import Executor, InstanceResult, RunOptions, RunResult
from civflow.run.state import object_store, prior_of, project_root
from civflow.spec.check import Checked
from civflow.store.journal import Journal, find_unfinished_run
from civflow.store.lockfile import LockedInstance, Lockfile

__all__ = [
    "Event",
    "InstanceResult",
    "Phase",
    "Prepared",
    "RunOptions",
    "RunResult",
    "check_resources",
    "estimate",
    "execute",
    "prepare",
]


@dataclass(frozen=True)
class Prepared:
    """Everything decided before the first request: state on disk and the plan."""

    checked: Checked
    root: Path
    lock: Lockfile | None
    priors: Mapping[str, Prior]
    plan: Plan
    resumed: Journal | None


def prepare(checked: Checked, options: RunOptions) -> Prepared:
    """Read the lockfile, fold in what an interrupted run finished, and plan."""
    spec = checked.spec
    root = project_root(spec)
    lock = Lockfile.load(spec.lockfile_path)
    resumed = find_unfinished_run(root / ".civflow" / "runs", spec.name)
    if resumed is not None:
        lock = _recover(lock, spec.name, resumed)
    store = object_store(spec)
    folder = spec.lockfile_path.parent
    priors = {name: prior_of(entry, folder, store)
              for name, entry in (lock.instances.items() if lock else ())}
    return Prepared(checked, root, lock, priors, plan(checked, priors, options.plan), resumed)


def _recover(lock: Lockfile | None, pipeline: str, journal: Journal) -> Lockfile:
    """Entries an interrupted run finished but had not yet checkpointed."""
    entries: dict[str, LockedInstance] = dict(lock.instances) if lock else {}
    for record in journal.records():
        if record.get("event") == "finished" and record.get("status") == "succeeded" \
                and isinstance(record.get("entry"), Mapping):
            entry = LockedInstance.from_dict(record["entry"])
            entries[entry.instance] = entry
    return Lockfile(pipeline, entries)


async def check_resources(prepared: Prepared, backend: Backend) -> None:
    """GET every AIR the plan names before anything is spent; a typo is an error."""
    airs: dict[str, str] = {}
    for planned in prepared.plan.instances:
        if not planned.decision.runs:
            continue
        inst = planned.instance
        for air in catalog.resource_airs(inst.type, inst.input):
            if isinstance(air, str) and "<pending" not in air and "{{" not in air:
                airs.setdefault(air, inst.name)

    async def one(air: str, instance: str) -> None:
        try:
            await backend.resource(air)
        except ApiNotFound as exc:
            raise ApiNotFound(f"instance {instance}: resource {air} does not exist on Civitai",
                              status=404, hint="check the model or LoRA AIR for typos") from exc
    await asyncio.gather(*(one(air, name) for air, name in sorted(airs.items())))


# Steps priced per `whatif` request: independent steps of one template cost their sum.
WHATIF_BATCH = 50


async def estimate(prepared: Prepared, backend: Backend | None) -> float:
    """Buzz for what the plan runs: `whatif` when a backend is given (instances packed as
    independent steps of one template, WHATIF_BATCH per request), the catalog's
    published formulas otherwise and for instances not resolved yet."""
    from civflow.plan import workflow_body

    total = 0.0
    steps: list[dict[str, Any]] = []
    template: dict[str, Any] | None = None
    for planned in prepared.plan.instances:
        if not planned.decision.runs:
            continue
        inst = planned.instance
        if backend is None or not inst.resolved:
            total += planned.estimate or 0.0
            continue
        body = workflow_body(prepared.checked.spec, inst, run_id=None, external_id=None)
        if template is None:
            template = {k: v for k, v in body.items() if k not in ("steps", "metadata")}
            template["tags"] = [t for t in body["tags"] if "<pending" not in t]
        step = body["steps"][0]
        steps.append({**step, "name": f"i{len(steps)}"})
    if backend is not None and template is not None:
        batches = [steps[i:i + WHATIF_BATCH] for i in range(0, len(steps), WHATIF_BATCH)]
        priced = await asyncio.gather(*(
            backend.submit({**template, "steps": batch}, whatif=True) for batch in batches))
        total += sum(state.cost for state in priced)
    return total


async def execute(prepared: Prepared, backend: Backend, options: RunOptions, *,
                  reporter: Reporter = ignore,
                  confirm: Callable[[Plan, float], Awaitable[bool]] | None = None,
                  pipeline_file: str = "") -> RunResult:
    """Check resources, estimate, ask (when `confirm` is given), then run."""
    await check_resources(prepared, backend)
    if confirm is not None or options.max_cost is not None:
        cost = await estimate(prepared, backend if confirm is not None else None)
        if options.max_cost is not None and cost > options.max_cost:
            raise SpendingRefused(
                f"the plan is estimated at {cost:,.0f} Buzz, over --max-cost "
                f"{options.max_cost:,.0f}", hint="raise --max-cost or run fewer steps (--only)")
        if confirm is not None and not await confirm(prepared.plan, cost):
            raise SpendingRefused("not confirmed: nothing was submitted")
    journal = prepared.resumed or Journal.create(prepared.root / ".civflow" / "runs",
                                                 prepared.checked.spec.name)
    journal.append({"event": "run-started" if prepared.resumed is None else "run-resumed",
                    "pipeline": pipeline_file or str(prepared.checked.spec.path)})
    executor = Executor(prepared.checked, backend, journal=journal,
                        store=object_store(prepared.checked.spec), root=prepared.root,
                        priors=prepared.priors, lock=prepared.lock, options=options,
                        reporter=reporter)
    return await executor.run()
