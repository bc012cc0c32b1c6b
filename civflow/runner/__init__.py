"""Execute a planned pipeline: resume, check resources, estimate, ask, run, record."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from civflow import catalog
from civflow.check import Checked
from civflow.client.base import Backend, WorkflowState
from civflow.errors import (
    ApiNotFound,
    CivflowError,
    FileAccessError,
    SpendingRefused,
    UsageError,
)
from civflow.expand import canonical_json
from civflow.grouping import Grouping, group_plan
from civflow.loading.model import PipelineSpec
from civflow.names import blob_id_ok
from civflow.origin import Origin
from civflow.planning import Decision, Plan, PlanOptions, Prior, plan
from civflow.request import workflow_body, workflow_step
from civflow.runner.events import Event, Phase, Reporter, ignore
from civflow.runner.executor import Executor
from civflow.runner.lock import run_lock
from civflow.runner.results import InstanceResult, RunOptions, RunResult
from civflow.runner.resume import History, read_history
from civflow.runner.state import (
    Alternates,
    default_out,
    entry_archive,
    object_store,
    prior_of,
    project_root,
    runs_root,
    stat_cache,
)
from civflow.store.journal import Journal
from civflow.store.lockfile import Lockfile

__all__ = [
    "Estimate",
    "Event",
    "InstanceResult",
    "Phase",
    "Prepared",
    "RunOptions",
    "RunResult",
    "check_resources",
    "estimate",
    "execute",
    "gone_blobs",
    "lockfile_target",
    "prepare",
    "run_lock",
    "runs_root",
]


@dataclass(frozen=True)
class Prepared:
    """Everything decided before the first request: state on disk and the plan."""

    checked: Checked
    root: Path
    lock: Lockfile | None
    history: History
    plan: Plan
    lock_path: Path  # where this run records what it did (see `lockfile_target`)

    @property
    def resumed(self) -> Journal | None:
        return self.history.unfinished

    @cached_property
    def grouping(self) -> Grouping:
        """Which instances share a workflow: decided once, from the plan, and what
        `plan` shows, `render` prints and `run` submits."""
        return group_plan(self.checked, self.plan)


def prepare(checked: Checked, options: PlanOptions | None = None, *,
            update_lockfile: bool = False, out_dir: Path | None = None,
            gone: frozenset[str] = frozenset(),
            origin: Origin = Origin.CIVITAI) -> Prepared:
    """Read the lockfile and what earlier runs left behind, and plan.

    With `--var` values that differ from the file's defaults, the committed lockfile is
    read but not written: the run's results go to a lockfile of their own under
    `.civflow/locks/` (read back by the next run with the same values), unless
    `update_lockfile`. Hold the pipeline's `run_lock` around prepare and execute: what
    is read here must not change under the run. Files are checked where a run into
    `out_dir` (default: the project's `out/`) keeps them; `gone` names the blobs Civitai
    no longer has (`gone_blobs`), whose instances are planned as lost work.

    `origin` is the API the run talks to. Only results that API made are cached: a run
    against Civitai never takes an emulator's picture for paid work, and an emulator run
    makes its own previews. Emulator runs keep their lockfile and journals under
    `.civflow/previews/` (git-ignored), so the committed lockfile only ever holds paid work.
    """
    spec = checked.spec
    root = project_root(spec)
    home = lockfile_target(spec, root, update=True, origin=origin)
    lock = Lockfile.load(home)
    target = lockfile_target(spec, root, update=update_lockfile, origin=origin)
    trial = lockfile_target(spec, root, origin=origin)  # what runs with these values recorded
    if trial != home:
        own = Lockfile.load(trial)
        if own is not None:
            lock = Lockfile(spec.name, {**(lock.instances if lock else {}), **own.instances},
                            lock.vars if lock else {},
                            {**(lock.alternates if lock else {}), **own.alternates})
    history = read_history(runs_root(root, origin), spec.name)
    if history.recovered:
        # Entries an interrupted run finished but had not yet checkpointed.
        lock = Lockfile(spec.name, {**(lock.instances if lock else {}), **history.recovered},
                        lock.vars if lock else {}, lock.alternates if lock else {})
    store = object_store(spec)
    folder = spec.lockfile_path.parent
    cache = stat_cache(store)
    out_base = default_out(spec, out_dir)
    priors: Mapping[str, Prior] = {
        name: prior_of(entry, folder, store, cache, out_base)
        for name, entry in (lock.instances.items() if lock else ())
        if Origin.of_entry(entry.made_by) is origin}
    alternates = Alternates(lock.alternates if lock else {}, entry_archive(root), folder,
                            store, cache, out_base, origin=origin)
    cache.save()
    made = plan(checked, priors, options, inflight=history.inflight,
                attempts=history.attempts, failed=history.failed, alternates=alternates,
                gone=gone, origin=origin, elsewhere=_made_elsewhere(spec, root, lock, origin))
    return Prepared(checked, root, lock, history, made, target)


def _made_elsewhere(spec: PipelineSpec, root: Path, lock: Lockfile | None,
                    origin: Origin) -> Mapping[str, tuple[str, Origin]]:
    """Instances the other API made (name -> fingerprint, origin): in this lockfile (an
    entry copied or committed by hand), or in the other origin's own lockfile. None is
    cached; the plan only says why they still run."""
    other = Origin.EMULATOR if origin is Origin.CIVITAI else Origin.CIVITAI
    found: dict[str, tuple[str, Origin]] = {}
    try:
        theirs = Lockfile.load(lockfile_target(spec, root, origin=other))
    except CivflowError:
        theirs = None  # the other lockfile only explains a decision: damage there is moot
    for source in (theirs, lock):
        for name, entry in (source.instances.items() if source else ()):
            made = Origin.of_entry(entry.made_by)
            if made is not origin:
                found[name] = (entry.fingerprint, made)
    return found


def lockfile_target(spec: PipelineSpec, root: Path, *, update: bool = False,
                    origin: Origin = Origin.CIVITAI) -> Path:
    """Where a run against `origin` records what it made.

    Against Civitai: the committed lockfile; for one-off `--var` values,
    `.civflow/locks/<name>.vars-<hash>.lock.json`, so a trial never rewrites what the
    team committed. Against the emulator: `.civflow/previews/<name>.lock.json` (and
    `<name>.vars-<hash>.lock.json`), git-ignored, so a preview can never be committed
    as paid work by following the docs.
    """
    digest = None
    if spec.overrides and not update:
        digest = hashlib.sha256(canonical_json(dict(spec.overrides)).encode()).hexdigest()[:12]
    if origin is Origin.EMULATOR:
        suffix = f".vars-{digest}" if digest else ""
        return root / ".civflow" / "previews" / f"{spec.name}{suffix}.lock.json"
    if digest is None:
        return spec.lockfile_path
    return root / ".civflow" / "locks" / f"{spec.name}.vars-{digest}.lock.json"


async def gone_blobs(prepared: Prepared, backend: Backend) -> frozenset[str]:
    """Ask Civitai for every blob a cached instance can get nowhere else (not in out/,
    the store or the remote): those it no longer has. Their instances must be made
    again, so `run` plans them as lost work, priced and capped, before anything is sent.
    Nothing is downloaded here."""
    policy = prepared.plan.policy
    wanted: set[str] = set()
    for planned in prepared.plan.instances:
        prior = policy.prior_for(planned.instance)
        if planned.decision is Decision.CACHED and prior is not None:
            wanted.update(prior.lost)
    # A blob id of a shape civflow never sends (a hand-edited lockfile) cannot be
    # fetched again either: gone, without asking.
    gone: set[str] = {b for b in wanted if not blob_id_ok(b)}
    wanted -= gone
    if not wanted:
        return frozenset(gone)
    asking = asyncio.Semaphore(8)

    async def ask(blob_id: str) -> None:
        async with asking:
            try:
                answer = await backend.refresh_blob(blob_id)
            except ApiNotFound:
                gone.add(blob_id)
                return
        if not isinstance(answer.get("url"), str):  # blocked or hidden since
            gone.add(blob_id)

    await asyncio.gather(*(ask(b) for b in sorted(wanted)))
    return frozenset(gone)


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
# As many as a submitted batch may hold (`batch` <= 100): pricing 3,000 instances
# takes 30 requests, not 60 (74 ms instead of 100 against the emulator).
WHATIF_BATCH = 100


@dataclass(frozen=True)
class Estimate:
    """Buzz for what the plan runs; `unpriced` instances can only be priced at run time
    (their inputs depend on outputs not produced yet and no formula is known)."""

    total: float
    unpriced: int = 0


async def estimate(prepared: Prepared, backend: Backend | None, *,
                   whatif_all: bool = False) -> Estimate:
    """Price the plan: the catalog's formulas, `whatif` for resolved instances that have
    none (or for every resolved instance with `whatif_all`), packed WHATIF_BATCH steps
    per request. Nothing unpriced is ever counted as free: it is reported in `unpriced`."""
    total = 0.0
    unpriced = 0
    steps: list[dict[str, Any]] = []
    template: dict[str, Any] | None = None
    asked: list[asyncio.Task[WorkflowState]] = []

    def ask() -> None:  # each full batch is priced while the next one is being built
        assert backend is not None and template is not None
        first = len(asked) * WHATIF_BATCH
        batch = {**template, "steps": steps[first:first + WHATIF_BATCH]}
        asked.append(asyncio.create_task(backend.submit(batch, whatif=True)))

    try:
        for planned in prepared.plan.instances:
            if not planned.decision.runs:
                continue
            inst = planned.instance
            offline = planned.estimate
            if backend is None or not inst.resolved or \
                    (offline is not None and not whatif_all):
                if offline is None:
                    unpriced += 1
                total += (offline or 0.0) * planned.expected
                continue
            if template is None:  # what every priced workflow shares: from the first
                body = workflow_body(prepared.checked.spec, inst, run_id=None,
                                     external_id=None)
                template = {k: v for k, v in body.items() if k not in ("steps", "metadata")}
                template["tags"] = [t for t in body["tags"] if "<pending" not in t]
            steps.append(workflow_step(inst, f"i{len(steps)}"))
            if len(steps) % WHATIF_BATCH == 0:
                ask()
                await asyncio.sleep(0)  # let it go out
        if backend is not None and len(steps) % WHATIF_BATCH:
            ask()
        priced = await asyncio.gather(*asked)
    except BaseException:
        for task in asked:
            task.cancel()
        await asyncio.gather(*asked, return_exceptions=True)
        raise
    total += sum(state.cost for state in priced)
    return Estimate(total, unpriced)


def _over_cap(total: float, cap: float) -> None:
    raise SpendingRefused(f"the plan is estimated at {total:,.0f} Buzz, over --max-cost "
                          f"{cap:,.0f}", hint="raise --max-cost or run fewer steps (--only)")


def check_out_dir(out_dir: Path) -> None:
    """`--out` must be a folder civflow can write, found out before anything is paid for."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileAccessError(path=str(out_dir), reason="exists and is not a folder (--out)")
    probe = out_dir / f".civflow-probe-{os.getpid()}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
    except OSError as exc:
        raise FileAccessError(path=str(out_dir),
                              reason=f"outputs cannot be written there: "
                                     f"{exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


async def execute(prepared: Prepared, backend: Backend, options: RunOptions, *,
                  reporter: Reporter = ignore,
                  confirm: Callable[[Plan, Estimate], Awaitable[bool]] | None = None,
                  pipeline_file: str = "") -> RunResult:
    """Check resources and the output folder, estimate, ask (when `confirm` is given),
    then run."""
    check_out_dir(options.out_dir or prepared.root / "out")
    made_for = prepared.plan.policy.origin
    if await backend.identify() is not made_for:
        # A plan for Civitai would record an emulator's pictures as paid work.
        raise UsageError(f"the plan was made for {made_for.value} but the API is "
                         f"{backend.origin}: nothing was submitted",
                         hint="prepare the plan with origin=await backend.identify()")
    if options.max_cost is not None and prepared.plan.estimate > options.max_cost:
        # The catalog's prices alone are over the cap: refused before any request, the
        # whatif included.
        _over_cap(prepared.plan.estimate, options.max_cost)
    await check_resources(prepared, backend)
    if confirm is not None or options.max_cost is not None:
        cost = await estimate(prepared, backend, whatif_all=confirm is not None)
        if options.max_cost is not None and cost.total > options.max_cost:
            _over_cap(cost.total, options.max_cost)
        if confirm is not None and not await confirm(prepared.plan, cost):
            raise SpendingRefused("not confirmed: nothing was submitted")
    # Creating the journal and its first record fsync: off the event loop, like every
    # write of a run, so an interrupt is never kept waiting behind a slow disk.
    journal = prepared.resumed
    if journal is None:
        journal = await asyncio.to_thread(Journal.create,
                                          runs_root(prepared.root, prepared.plan.policy.origin),
                                          prepared.checked.spec.name)
    await asyncio.to_thread(journal.append, {
        "event": "run-started" if prepared.resumed is None else "run-resumed",
        "pipeline": pipeline_file or str(prepared.checked.spec.path)})
    executor = Executor(prepared.checked, backend, plan=prepared.plan,
                        grouping=prepared.grouping, journal=journal,
                        store=object_store(prepared.checked.spec), root=prepared.root,
                        lock=prepared.lock, lock_path=prepared.lock_path,
                        archive=entry_archive(prepared.root),
                        history=prepared.history, options=options,
                        reporter=reporter)
    return await executor.run()
