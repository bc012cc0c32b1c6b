"""Execute a plan: schedule ready steps, submit, follow, download, record.

The executor decides nothing of its own: every instance is decided by the plan's
`Policy` (the same object `civflow plan` used), and only what is genuinely known at
run time (fan-out, `when`, upstream outputs) is resolved here.

Every submission is journaled (with its externalId) and fsync'd before the POST, so
a crash at any moment is followed by a run that re-attaches instead of paying again.
Journal and lockfile writes run in worker threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from civflow.check import Checked
from civflow.check.render import resolve_pending
from civflow.client.base import TERMINAL, Backend, WorkflowState
from civflow.errors import ApiError, ApiNotFound, ApiProtocolError, PipelineInvalid, UnsafePath
from civflow.expand import (
    Context,
    Instance,
    StepResults,
    evaluate_when,
    fingerprint,
    resolve_step,
)
from civflow.load.model import StepSpec
from civflow.names import strip_urls
from civflow.origin import Origin
from civflow.plan import Decision, Plan, PlannedInstance, Prior
from civflow.request import batch_body, run_tag, tokenize_output, workflow_body
from civflow.runner.batching import (
    Ref,
    apportion,
    batch_size,
    foreach_lanes,
    lane_index,
    resolve_refs,
    with_refs,
    workflows,
)
from civflow.runner.blobs import BlobBook
from civflow.runner.budget import Budget, OverBudget
from civflow.runner.deadlines import DEFAULT_TIMEOUT, timed_out, timed_out_steps, timeout_seconds
from civflow.runner.events import Event, Phase, Reporter, ignore
from civflow.runner.results import InstanceResult, RunOptions, RunResult
from civflow.runner.resume import History
from civflow.runner.state import artifact_health, prior_of, stat_cache
from civflow.store.archive import EntryArchive
from civflow.store.integrity import relocated
from civflow.store.journal import Journal, batch_external_id, external_id
from civflow.store.lockfile import LockedInstance, Lockfile
from civflow.store.objects import ObjectStore

__all__ = ["Executor"]

_FLUSH_EVERY = 1.0  # seconds between lockfile checkpoints, at least
_FLUSH_SHARE = 10  # ... and at least this many times as long as the last one took



class _Stop(Exception):
    """Raised inside instance tasks when the run stops starting new work."""


@dataclass(frozen=True)
class _Reuse:
    """What an earlier result does for an instance (see `Executor._reuse`)."""

    settled: bool  # done without submitting: cached (its output), or failed (None)
    output: Mapping[str, Any] | None = None
    fresh: bool = False  # to be made again under a new key: its earlier files are gone


@dataclass(frozen=True)
class _Ticket:
    """An instance that is to be submitted in a batch, with its key."""

    inst: Instance
    planned: PlannedInstance
    fp: str  # of a fused instance: of its request with the refs still unknown
    attempt: int
    key: str
    refs: tuple[Ref, ...] = ()  # a fused instance's inputs from its batch-mates' outputs


class Executor:
    """Runs one plan against one backend; create one per run."""

    def __init__(self, checked: Checked, backend: Backend, *, plan: Plan, journal: Journal,
                 store: ObjectStore, root: Path, lock: Lockfile | None, lock_path: Path,
                 archive: EntryArchive,
                 history: History,
                 options: RunOptions, reporter: Reporter = ignore,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.checked = checked
        self.spec = checked.spec
        self.policy = plan.policy
        self.backend = backend
        self.journal = journal
        self.store = store
        self.options = options
        self.report = reporter
        self.clock = clock
        self.out_dir = options.out_dir or root / "out"
        self.lock_dir = self.spec.lockfile_path.parent
        self.blobs = BlobBook(backend, store)
        self.entries: dict[str, LockedInstance] = dict(lock.instances) if lock else {}
        self.alternates: dict[str, LockedInstance] = dict(lock.alternates) if lock else {}
        self.archive = archive
        self.priors: dict[str, Prior] = dict(self.policy.priors)
        self.history = history
        self.lock_path = lock_path
        self.result = RunResult(journal.run_id, lockfile=lock_path, artifacts_base=self.lock_dir,
                                out_dir=self.out_dir / self.spec.name,
                                preview=self.policy.origin is Origin.EMULATOR)
        self.budget = Budget(options.max_cost)
        self.slots = asyncio.Semaphore(max(1, options.concurrency))
        self.download_slots = asyncio.Semaphore(8)
        self.stopping = False
        self.context = Context(self.spec, journal.run_id, checked.engine)
        self.stats = stat_cache(store)
        self.settled: set[str] = set()  # in-flight intents this run took over
        self.complete: dict[str, frozenset[str]] = {}  # step -> its instances, all succeeded
        # Written at the end even when nothing ran: entries an interrupted run finished,
        # a lockfile not there yet, or one that records other vars than this run's.
        self._dirty = bool(history.recovered) or not lock_path.exists() or \
            (lock is not None and dict(lock.vars) != dict(self.spec.overrides))
        self._last_flush = 0.0
        self._flush_cost = 0.0
        self._flush_lock = asyncio.Lock()
        self.batch = batch_size(self.spec.batch)
        # Fusion rides on batching; CIVFLOW_FUSE=0 turns it off (to measure it apart).
        self.fuse = self.batch > 1 and os.environ.get("CIVFLOW_FUSE", "1") != "0"
        # Instances a fused workflow already settled, before their own step came up.
        self.fused_done: dict[str, Mapping[str, Any] | None] = {}
        self.alias: dict[str, str] = {}  # a fused foreach instance's lane name -> its name
        # Steps whose instances the plan rendered completely (from vars, matrix and fully
        # cached upstream outputs): the run uses them as they are, unless an upstream
        # step's cached outputs turned out lost and it ran again (`refreshed`).
        by_step: dict[str, list[Instance]] = {}
        for p in plan.instances:
            by_step.setdefault(p.instance.step, []).append(p.instance)
        self.planned = {name: found for name, found in by_step.items()
                        if all(i.resolved for i in found)}
        self.refreshed: set[str] = set()
        for entry in self.entries.values():
            self.blobs.learn_artifacts(entry.artifacts)

    # -- the schedule --------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run every wanted step as soon as its upstream steps are done."""
        graph = self.checked.graph
        wanted = self.policy.wanted
        order = [s for s in graph.order if s in wanted]
        pending = {s: sum(1 for u in graph.upstream(s) if u in wanted) for s in order}
        ready = deque(s for s in order if pending[s] == 0)
        failed: set[str] = set()
        running: dict[asyncio.Task[StepResults | None], str] = {}
        try:
            await self._flush(force=True)  # entries an interrupted run finished
            await self._settle_batches()
            while ready or running:
                while ready:
                    step = ready.popleft()
                    running[asyncio.create_task(self._run_step(step, failed))] = step
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    outcome = task.result()
                    if outcome is None:
                        failed.add(step)
                    else:
                        self.context.learn(step, outcome)
                        if outcome.skipped:
                            failed.add(step)
                    for after in graph.graph.successors(step):
                        if after in pending:
                            pending[after] -= 1
                            if pending[after] == 0:
                                ready.append(after)
            await self._settle_orphans()
        except BaseException as exc:
            # Ctrl-C, or an error that ends the run (no funds, auth, network): stop the
            # other instances and checkpoint what already finished, so nothing paid for
            # waits on the journal alone. The run stays unfinished; a re-run resumes it.
            self.result.interrupted = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await asyncio.shield(self._flush(force=True))
            await asyncio.shield(asyncio.to_thread(self.journal.append, {"event": "interrupted"}))
            raise
        self._prune()
        await self._flush(force=True)
        await asyncio.to_thread(self.stats.save)
        status = "failed" if self.result.failed else "succeeded"
        await asyncio.to_thread(self.journal.append, {"event": "run-finished", "status": status})
        return self.result

    async def _run_step(self, name: str, failed: set[str]) -> StepResults | None:
        """None when the step failed or was skipped for a failure (dependents are skipped)."""
        step = self.spec.steps[name]
        dead = [u for u in self.checked.graph.upstream(name) if u in failed]
        if dead:
            self._skip_step(name, f"upstream {dead[0]} did not succeed")
            return None
        if self.stopping:
            self._skip_step(name, "the run stopped before this step")
            return None
        try:
            verdict = evaluate_when(self.checked, step, self.context)
            if verdict is False:
                self._skip_step(name, f"when: {step.when} is false")
                return StepResults((), skipped=True)
            if verdict is None:
                raise PipelineInvalid([self.spec.doc.diagnostic(
                    f"step '{name}': when could not be decided from its upstream outputs",
                    ("steps", name, "when"))])
            known = self.planned.get(name)
            if known is not None and not set(self.checked.graph.upstream(name)) & \
                    self.refreshed and not any(i.when_pending for i in known):
                instances = known  # rendered by the plan from the same data: not twice
            else:
                instances = [i for i in resolve_step(self.checked, step, self.context,
                                                     self.policy.seed)
                             if self.policy.selected(i.name, name)]
        except PipelineInvalid as exc:
            # A template that fails on real outputs is a located failure of this step;
            # it never lets a guarded, paid step run.
            self._fail_step(name, exc.render())
            return None
        if self.batch > 1:
            outputs = await self._run_batched(instances, step)
        else:
            outputs = await asyncio.gather(*(self._run_instance(i, step) for i in instances))
        if any(o is None for o in outputs):
            return None
        self.complete[name] = frozenset(i.name for i in instances)
        return StepResults.of(instances, [o for o in outputs if o is not None])

    def _skip_step(self, step: str, reason: str) -> None:
        self.result.results[step] = InstanceResult(step, step, "skipped", reason=reason)
        self.report(Event(step, Phase.SKIPPED, detail=reason))

    def _fail_step(self, step: str, reason: str) -> None:
        self.result.results[step] = InstanceResult(step, step, "failed", reason=reason)
        self.report(Event(step, Phase.FAILED, status="failed", detail=reason))
        if self.options.fail_fast:
            self.stopping = True

    # -- one instance --------------------------------------------------------------

    async def _run_instance(self, inst: Instance, step: StepSpec) -> Mapping[str, Any] | None:
        """The tokenized output of the instance, or None if it did not succeed."""
        planned = self.policy.decide(inst, step)
        fp = inst.fingerprint
        reused = await self._reuse(inst, planned)
        if reused.settled:
            return reused.output
        fresh = reused.fresh
        if fp is None:
            self._fail_step(inst.name, "its input could not be resolved from upstream outputs")
            return None
        if self._failed_in_a_batch(inst, fp, fresh):
            await self._failed_before(inst, fp, self.policy.failed[(inst.name, fp)])
            return None
        try:
            return await self._submit_and_collect(inst, step, fp, planned.estimate, fresh)
        except _Stop as stop:
            self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "not-run",
                                                            reason=str(stop))
            self.report(Event(inst.name, Phase.SKIPPED, detail=str(stop)))
            return None

    # -- instances in batches ------------------------------------------------------------

    async def _run_batched(self, instances: Sequence[Instance], step: StepSpec
                           ) -> list[Mapping[str, Any] | None]:
        """A step's instances: cached ones as always, the rest packed into workflows of up
        to `self.batch` steps (`batching.batches`), each batch one POST."""
        outputs: dict[str, Mapping[str, Any] | None] = {}
        tickets: dict[str, _Ticket] = {}
        singles: dict[str, asyncio.Task[Mapping[str, Any] | None]] = {}
        names = [i.name for i in instances]
        mine: list[PlannedInstance] = []  # every instance, as the grouping sees it
        for inst in instances:
            if inst.name in self.fused_done:  # ran in a fused workflow of its upstream
                outputs[inst.name] = self.fused_done[inst.name]
                continue
            planned = self.policy.decide(inst, step)
            mine.append(replace(planned, instance=inst, decision=Decision.CACHED))
            fp = inst.fingerprint
            reused = await self._reuse(inst, planned)
            if reused.settled:
                outputs[inst.name] = reused.output
                continue
            fresh = reused.fresh
            if fp is None:
                self._fail_step(inst.name, "its input could not be resolved from upstream "
                                           "outputs")
                outputs[inst.name] = None
                continue
            flying = self.policy.inflight.get(inst.name)
            if flying is not None and flying.fingerprint == fp and not fresh:
                # Submitted alone by an interrupted run: re-attach to it, alone.
                singles[inst.name] = asyncio.create_task(
                    self._single(inst, step, planned, fresh))
                continue
            attempt, _ = self.policy.attempt(inst, fp, fresh=fresh)
            ended = self.policy.failed.get((inst.name, fp))
            if ended in ("failed", "blocked") and \
                    attempt <= self.policy.attempts.get((inst.name, fp), 0):
                # Its last attempt failed and this run reuses that attempt's key: as one
                # workflow, the API would hand back the failed workflow; in a batch, a new
                # batch must not pay for it again. Reported as failed, never re-sent.
                await self._failed_before(inst, fp, ended)
                outputs[inst.name] = None
                continue
            self.report(Event(inst.name, Phase.WAITING))
            tickets[inst.name] = _Ticket(inst, planned, fp, attempt, external_id(fp, attempt))
            mine[-1] = replace(planned, instance=inst)
        ahead = self._fusion_candidates(step.name, mine) if self.fuse and tickets else []
        groups = [g for g in workflows([*mine, *ahead], self.batch, upstream=self._upstream,
                                       guarded=self._guarded, fuse=self.fuse)
                  if g.step == step.name]  # other steps' own batches: when they come up
        for group in groups:
            for name in group.fused:
                tickets[name] = self._fused_ticket(
                    next(p for p in ahead if p.name == name), group.refs[name], tickets)
        done = await asyncio.gather(*(
            self._run_batch([tickets[n] for n in group.members], step) for group in groups))
        for part in done:
            outputs.update(part)
        for name, task in singles.items():
            outputs[name] = await task
        return [outputs.get(n) for n in names]

    @property
    def _upstream(self) -> dict[str, frozenset[str]]:
        graph = self.checked.graph
        return {name: frozenset(graph.upstream(name)) for name in self.spec.steps}

    @property
    def _guarded(self) -> frozenset[str]:
        return frozenset(n for n, s in self.spec.steps.items() if isinstance(s.when, str))

    def _fusion_candidates(self, root: str, mine: Sequence[PlannedInstance]
                           ) -> list[PlannedInstance]:
        """The instances of the steps downstream of `root` that only need steps of its
        group, resolved as far as known now (their inputs wait on the group's outputs);
        `batching.workflows` decides which of them are fused."""
        graph = self.checked.graph
        group = {root}
        by_step: dict[str, list[PlannedInstance]] = {root: list(mine)}
        out: list[PlannedInstance] = []
        for name in graph.order:
            ups = set(graph.upstream(name))
            if name in group or name not in self.policy.wanted or not ups or \
                    not ups <= group or name in self.complete or name in self.planned:
                continue  # (the plan rendered it whole: it waits on no output)
            step = self.spec.steps[name]
            try:
                found = [i for i in resolve_step(self.checked, step, self.context,
                                                 self.policy.seed)
                         if self.policy.selected(i.name, name)]
            except PipelineInvalid:
                continue  # decided when the step comes up, from real outputs
            if not found or all(i.resolved for i in found) or any(
                    i.name in self.fused_done or i.name in self.policy.inflight
                    for i in found):
                continue  # nothing waits on the group's outputs (a bare `needs`), or taken
            decided = [self.policy.decide(i, step) for i in found]
            if len(found) == 1 and found[0].fanout:
                earlier = any(n.startswith(f"{name}[") for n in self.policy.priors)
                if len(ups) != 1 or name in self.policy.filtered or (
                        earlier and name not in self.policy.forced | self.policy.rerolled):
                    continue  # earlier results may still be cached: decided from outputs
                lanes = foreach_lanes(self.checked, step, self.context, decided[0], by_step)
                if lanes is None:
                    continue
                decided = lanes
            out += decided
            by_step[name] = decided
            group.add(name)
        return out

    def _realize(self, step: str, index: int, source: str) -> Instance | None:
        """A fused foreach instance as the foreach names and renders it once its source's
        images are known (the source recorded just before, in the same batch)."""
        spec_step = self.spec.steps.get(step)
        upstream = self.checked.graph.upstream(step) if spec_step is not None else ()
        prior = self.priors.get(self.alias.get(source, source))
        if spec_step is None or len(upstream) != 1 or prior is None:
            return None
        context = Context(self.spec, self.journal.run_id)
        context.learn(upstream[0], StepResults((prior.output,), names=(source,)))
        try:
            found = resolve_step(self.checked, spec_step, context, self.policy.seed)
        except PipelineInvalid:
            return None
        return found[index] if index < len(found) and not found[index].fanout else None

    def _fused_ticket(self, planned: PlannedInstance, refs: tuple[Ref, ...],
                      tickets: Mapping[str, _Ticket]) -> _Ticket:
        """A fused instance's key: from its request (refs unknown) and its sources' keys,
        so the same sources and the same request give the same key on any machine."""
        inst = planned.instance
        request = resolve_pending(inst.request)
        fp = fingerprint(request)
        sources = sorted({tickets[r.source].key for r in refs})
        attempt = max(1, self.policy.attempts.get((inst.name, fp), 0))
        return _Ticket(inst, planned, fp, attempt,
                       external_id("\n".join([fp, *sources]), attempt), refs)

    async def _single(self, inst: Instance, step: StepSpec, planned: PlannedInstance,
                      fresh: bool) -> Mapping[str, Any] | None:
        try:
            return await self._submit_and_collect(inst, step, inst.fingerprint or "",
                                                  planned.estimate, fresh)
        except _Stop as stop:
            self._not_run(inst, str(stop))
            return None

    def _failed_in_a_batch(self, inst: Instance, fp: str, fresh: bool) -> bool:
        """Its last attempt failed in a batch and this run would reuse that attempt's key:
        sent alone, the API would not know the key and would charge again."""
        if (inst.name, fp) not in self.history.batched or \
                self.policy.failed.get((inst.name, fp)) not in ("failed", "blocked"):
            return False
        attempt, _ = self.policy.attempt(inst, fp, fresh=fresh)
        return attempt <= self.policy.attempts.get((inst.name, fp), 0)

    def _not_run(self, inst: Instance, reason: str) -> None:
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "not-run",
                                                        reason=reason)
        self.report(Event(inst.name, Phase.SKIPPED, detail=reason))

    async def _failed_before(self, inst: Instance, fp: str, ended: str) -> None:
        what = "was blocked by moderation" if ended == "blocked" else "failed"
        reason = (f"its last attempt {what}; it is not sent again"
                  + ("" if ended == "blocked" else " without --retry-failed"))
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "failed",
                                                        reason=reason)
        self.report(Event(inst.name, Phase.FAILED, status="failed", detail=reason))
        if self.options.fail_fast:
            self.stopping = True

    async def _run_batch(self, tickets: list[_Ticket], step: StepSpec
                         ) -> dict[str, Mapping[str, Any] | None]:
        """Submit one batch (its intents journaled first), follow it, and settle each
        member on its own: a failed step fails only its instance."""
        out: dict[str, Mapping[str, Any] | None] = {t.inst.name: None for t in tickets}
        async with self.slots:
            if self.stopping:
                for t in tickets:
                    self._not_run(t.inst, "the run stopped before this instance")
                return out
            tickets, charge = await self._reserve_batch(tickets, step)
            if not tickets:
                return out
            # Names too: two instances with one request share a key, not a step name.
            key = batch_external_id(f"{t.inst.name}={t.key}" for t in tickets)
            members = [(t.inst, await self.blobs.substitute(with_refs(t.inst.input, t.refs),
                                                            self.clock()))
                       for t in tickets]
            body = batch_body(self.spec, members, run_id=self.journal.run_id,
                              external_id=key)
            try:
                await asyncio.to_thread(self.journal.append_many, [_intent(t, key)
                                                                    for t in tickets])
                # A crash from here on is safe: the next run finds this batch by its
                # externalId and settles its members together.
                state = await self.backend.submit(body, wait=self.options.wait_seconds)
            except BaseException:
                self.budget.release(charge)
                raise
            await asyncio.to_thread(self.journal.append_many, [
                {"event": "submitted", "instance": t.inst.name, "workflowId": state.id,
                 "batch": key} for t in tickets])
            for t in tickets:
                self.report(Event(t.inst.name, Phase.SUBMITTED, status=state.status,
                                  workflow_id=state.id))
            try:
                # A fused chain runs its steps one after another: their timeouts add up.
                limit = sum(timeout_seconds(self.spec.steps[s])
                            for s in {t.inst.step for t in tickets})
                state = await self._follow(tickets[0].inst.name, state,
                                           limit + self.options.timeout_grace, batch=True)
            except BaseException:
                self.budget.release(charge)
                raise
            if self.options.fail_fast and not _succeeded(state):
                self.stopping = True
        self.budget.settle(charge, state.cost)
        self.result.spent = self.budget.spent
        shares = apportion(state.cost, [t.planned.estimate for t in tickets])

        pending: list[dict[str, Any]] = []  # the members' results: one fsync for all

        async def member(t: _Ticket, share: float) -> None:
            mine = member_state(state, t.inst.name, share)
            if t.refs:
                await self._collect_fused(t, mine, pending)
                return
            if not _succeeded(mine):
                await self._failed(t.inst, t.fp, mine)
                return
            async with self.download_slots:
                out[t.inst.name] = await self._collect(t.inst, t.fp, mine, pending)
        paired = list(zip(tickets, shares, strict=True))
        try:
            await asyncio.gather(*(member(t, c) for t, c in paired if not t.refs))
            for t, c in paired:  # sources first: a fused request needs its sources' outputs
                if t.refs:
                    await member(t, c)
        finally:
            if pending:
                await asyncio.to_thread(self.journal.append_many, pending)
                await self._flush()
        return out

    def _source_outputs(self, refs: Sequence[Ref]) -> dict[str, Any]:
        """The recorded outputs of a fused instance's sources that succeeded in this run."""
        out: dict[str, Any] = {}
        for ref in refs:
            name = self.alias.get(ref.source, ref.source)
            done = self.result.results.get(name)
            if done is not None and done.status == "succeeded" and name in self.priors:
                out[ref.source] = self.priors[name].output
        return out

    async def _collect_fused(self, t: _Ticket, mine: WorkflowState,
                             pending: list[dict[str, Any]]) -> None:
        """Record a fused instance as if it had been sent alone after its sources: its
        request (so its fingerprint) from their recorded outputs, its own result. A
        fused foreach instance gets its real name (from its item) here."""
        inst = t.inst
        real: dict[str, Any] | None
        index = lane_index(inst.name)
        if index is not None:
            found = self._realize(inst.step, index, t.refs[0].source) \
                if t.refs[0].source in self._source_outputs(t.refs[:1]) else None
            if found is not None:
                self.alias[inst.name] = found.name
                inst = found
            real = found.request if found is not None else None
        else:
            try:
                real = {**inst.request, "input": resolve_refs(
                    inst.input, t.refs, self._source_outputs(t.refs))}
            except LookupError:
                real = None
        fp = fingerprint(real) if real is not None else t.fp
        self.fused_done[inst.name] = None
        if real is None or not _succeeded(mine):
            await self._failed(inst, fp, mine, attempt=t.attempt)
            return
        async with self.download_slots:
            await self._download(inst.name, inst.step, inst.type, fp, real, inst.seed,
                                 inst.reroll, mine, pending=pending)
        self.report(Event(inst.name, Phase.SUCCEEDED, workflow_id=mine.id, cost=mine.cost))
        self.fused_done[inst.name] = self.priors[inst.name].output

    async def _reserve_batch(self, tickets: list[_Ticket], step: StepSpec
                             ) -> tuple[list[_Ticket], float]:
        """Reserve the whole batch's price under --max-cost before its POST: the members
        that fit are sent, the run stops for the others. 0 reserved without a cap."""
        if self.budget.limit is None:
            return tickets, 0.0
        estimates = [t.planned.estimate for t in tickets]
        keep: list[_Ticket] = []
        total = 0.0
        if any(e is None for e in estimates):  # no offline formula: ask the API
            members = [(t.inst, await self.blobs.substitute(t.inst.input, self.clock()))
                       for t in tickets]
            body = batch_body(self.spec, members, run_id=self.journal.run_id,
                              external_id=None)
            whole = (await self.backend.submit(body, whatif=True)).cost
            if whole <= self.budget.room():
                keep, total = list(tickets), whole
            next_price = whole
        else:
            for t, e in zip(tickets, estimates, strict=True):
                assert e is not None
                if total + e > self.budget.room():
                    break
                keep.append(t)
                total += e
            next_price = estimates[len(keep)] or 0.0 if len(keep) < len(tickets) else 0.0
        if keep:
            self.budget.reserve(total)
        if len(keep) < len(tickets):
            try:  # the cap's own words for what did not fit
                self.budget.reserve(next_price)
                self.budget.release(next_price)
                reason = f"--max-cost {self.budget.limit:g}: no room left"
            except OverBudget as over:
                reason = str(over)
            self.stopping = True
            self.result.budget_stop = reason
            for t in tickets[len(keep):]:
                self._not_run(t.inst, reason)
        return keep, total if keep else 0.0

    async def _reuse(self, inst: Instance, planned: PlannedInstance) -> _Reuse:
        """The one rule, batched or not, for an instance paid for before.

        Cached: its files are made whole in this run's out/ from wherever they are (the
        store, the team's remote, Civitai by blob id), and it is done. Should that fail
        after all (a copy vanished since the plan), the instance fails and nothing is
        submitted: making it again is work this plan did not price or ask for, and the
        next `civflow run` plans it as lost. Lost (the plan found no copy anywhere): it
        runs again under a new key, priced, capped and consented like new work.
        """
        if planned.decision is Decision.LOST:
            self.refreshed.add(inst.step)
            # An interrupted run already sent the re-make: re-attach to it by its key
            # (a new key would pay a second time). Otherwise it gets a key of its own.
            flying = self.policy.inflight.get(inst.name)
            resumed = flying is not None and flying.fingerprint == inst.fingerprint
            return _Reuse(settled=False, fresh=not resumed)
        if planned.decision is not Decision.CACHED:
            return _Reuse(settled=False)
        entry, prior = await self._current(inst)
        if prior.artifacts_ok or await self._repair(entry):
            self.result.results[inst.name] = InstanceResult(
                inst.name, inst.step, "cached", entry.workflow_id, entry.cost,
                artifacts=entry.artifacts)
            self.report(Event(inst.name, Phase.CACHED))
            return _Reuse(settled=True, output=prior.output)
        reason = ("its files could not be restored (not in out/, the store, the remote, "
                  "nor at Civitai any more); nothing was submitted, and the next "
                  "`civflow run` plans making it again, priced")
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "failed",
                                                        reason=reason)
        self.report(Event(inst.name, Phase.FAILED, status="failed", detail=reason))
        if self.options.fail_fast:
            self.stopping = True
        return _Reuse(settled=True)

    async def _current(self, inst: Instance) -> tuple[LockedInstance, Prior]:
        """The lock entry (and its planning view) the plan found cached for `inst`; an
        earlier result becomes the entry again, and the entry it replaces is archived."""
        entry = self.entries.get(inst.name)
        fp = inst.fingerprint
        if fp is not None and (entry is None or entry.fingerprint != fp):
            earlier = self.alternates.pop(fp, None) or \
                await asyncio.to_thread(self.archive.get, fp)
            if earlier is not None:
                before = entry
                entry = replace(earlier, instance=inst.name)
                self.entries[inst.name] = entry
                if before is not None:
                    await self._keep_earlier(before)
                self.priors[inst.name] = self.policy.alternates[fp]
                self._dirty = True
        assert entry is not None, "the plan decides cached only with an entry"
        # Files recorded outside this run's out/ (an earlier --out, a hand-edited path)
        # are restored into it, and the entry says where they are now.
        moved = relocated(entry, self.lock_dir, self.out_dir / self.spec.name)
        if moved is not entry:
            entry = self.entries[inst.name] = moved
            self._dirty = True
        return entry, self.priors[inst.name]

    async def _keep_earlier(self, entry: LockedInstance) -> None:
        """An entry replaced by another result stays findable by its fingerprint in this
        machine's archive (not the committed lockfile, whose diff stays small), so going
        back is cached."""
        await asyncio.to_thread(self.archive.put, entry)

    async def _repair(self, entry: LockedInstance) -> bool:
        """Bring back an instance's missing or modified files from the store, or by blob
        id; True when all are whole again. Nothing is submitted, nothing is charged."""
        self.report(Event(entry.instance, Phase.DOWNLOADING, detail="restoring files"))
        health = artifact_health(entry, self.lock_dir, self.store, self.stats)
        try:
            done = await self.blobs.repair(health.statuses, lock_dir=self.lock_dir,
                                           out_dir=self.out_dir / self.spec.name,
                                           cache=self.stats)
        except UnsafePath:
            return False  # recorded outside this run's out/ (an earlier --out): run again
        if all(status.ok for status in done):
            return True
        reasons = "; ".join(s.detail for s in done if not s.ok and s.detail)
        self.report(Event(entry.instance, Phase.WAITING, detail=reasons or None))
        return False

    async def _submit_and_collect(self, inst: Instance, step: StepSpec, fp: str,
                                  estimate: float | None, fresh: bool = False
                                  ) -> Mapping[str, Any] | None:
        attempt, workflow_id = self.policy.attempt(inst, fp, fresh=fresh)
        key = external_id(fp, attempt)
        flying = self.policy.inflight.get(inst.name)
        if flying is not None and flying.fingerprint == fp and not fresh:
            self.settled.add(inst.name)
        self.report(Event(inst.name, Phase.WAITING))
        async with self.slots:
            if self.stopping:
                raise _Stop("the run stopped before this instance")
            charge = 0.0
            if workflow_id is None and (fresh or flying is None or flying.fingerprint != fp):
                charge = await self._reserve(inst, estimate)
            try:
                state = await self._start(inst, fp, key, attempt, workflow_id)
            except ApiNotFound:
                self.budget.release(charge)
                return await self._vanished(inst, fp, workflow_id)
            except BaseException:
                self.budget.release(charge)
                raise
            state = await self._follow(inst.name, state,
                                       timeout_seconds(step) + self.options.timeout_grace)
            if self.options.fail_fast and not _succeeded(state):
                self.stopping = True  # before the slot is free for the next instance
        self.budget.settle(charge, state.cost)
        self.result.spent = self.budget.spent
        if not _succeeded(state):
            await self._failed(inst, fp, state)
            return None
        async with self.download_slots:
            return await self._collect(inst, fp, state)

    async def _reserve(self, inst: Instance, estimate: float | None) -> float:
        """Reserve the instance's price under --max-cost before its POST; 0 without a cap."""
        if self.budget.limit is None:
            return 0.0
        if estimate is None:  # no offline formula: ask the API what it would cost
            body = workflow_body(self.spec, inst, run_id=self.journal.run_id, external_id=None,
                                 input_override=await self.blobs.substitute(inst.input,
                                                                            self.clock()))
            estimate = (await self.backend.submit(body, whatif=True)).cost
        try:
            self.budget.reserve(estimate)
        except OverBudget as over:
            self.stopping = True
            self.result.budget_stop = str(over)
            raise _Stop(str(over)) from None
        return estimate

    async def _start(self, inst: Instance, fp: str, key: str, attempt: int,
                     workflow_id: str | None) -> WorkflowState:
        """Submit (journaling the intent first) or re-attach to an interrupted run's workflow."""
        if workflow_id is not None:
            state = await self.backend.get(workflow_id, wait=self.options.wait_seconds)
            self.report(Event(inst.name, Phase.ATTACHED, status=state.status,
                              workflow_id=workflow_id))
            return state
        body = workflow_body(self.spec, inst, run_id=self.journal.run_id, external_id=key,
                             input_override=await self.blobs.substitute(inst.input,
                                                                        self.clock()))
        await asyncio.to_thread(self.journal.append, {
            "event": "intent", "instance": inst.name, "step": inst.step, "type": inst.type,
            "fingerprint": fp, "externalId": key, "attempt": attempt, "seed": inst.seed,
            "reroll": inst.reroll, "request": _plain(inst.request)})
        # The POST itself long-polls: a short job costs one request. A crash before the
        # answer is safe: the re-sent POST carries the journaled externalId and gets the
        # same workflow back.
        state = await self.backend.submit(body, wait=self.options.wait_seconds)
        await asyncio.to_thread(self.journal.append, {
            "event": "submitted", "instance": inst.name, "workflowId": state.id})
        self.report(Event(inst.name, Phase.SUBMITTED, status=state.status,
                          workflow_id=state.id, cost=state.cost))
        return state

    async def _follow(self, name: str, state: WorkflowState, limit: float, *,
                      batch: bool = False) -> WorkflowState:
        """Long-poll until terminal; past `limit` seconds cancel the workflow (it failed;
        of a batch, the steps that had already succeeded are still collected)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        if not state.is_terminal and state.id is None:
            # Nothing to follow; the intent stays unsettled, so the next run re-sends the
            # same externalId and gets the workflow back instead of paying again.
            raise ApiProtocolError("the API accepted a workflow but sent no id for it",
                                   hint="run again: civflow re-attaches by its externalId")
        while not state.is_terminal and state.id is not None:
            workflow_id = state.id
            left = deadline - loop.time()
            if left <= 0:
                with contextlib.suppress(ApiError):  # it may have finished meanwhile
                    await self.backend.cancel(state.id)
                if not batch:
                    return timed_out(state, limit)
                with contextlib.suppress(ApiError):  # what finished before the cancel
                    state = await self.backend.get(workflow_id, wait=0)
                return timed_out_steps(state, limit)
            step = state.steps[0] if state.steps else None
            self.report(Event(name, Phase.RUNNING, status=state.status, workflow_id=state.id,
                              progress=step.progress if step else None,
                              queue_position=step.queue_position if step else None))
            # A long-poll; the client pauses before answering when the server ignores
            # `wait`, so a server that answers at once is never polled in a tight loop.
            state = await self.backend.get(workflow_id,
                                           wait=max(1, min(self.options.wait_seconds, int(left))))
        return state

    async def _vanished(self, inst: Instance, fp: str, workflow_id: str | None
                        ) -> Mapping[str, Any] | None:
        """The server no longer has a journaled workflow: report it; the next run submits
        the instance anew (with a new attempt, so a new externalId)."""
        reason = (f"workflow {workflow_id} no longer exists on the server; "
                  "the next run submits this instance again")
        await asyncio.to_thread(self.journal.append, {
            "event": "finished", "instance": inst.name, "fingerprint": fp,
            "status": "vanished", "workflowId": workflow_id, "reason": reason})
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "failed",
                                                        workflow_id, reason=reason)
        self.report(Event(inst.name, Phase.FAILED, status="vanished", detail=reason,
                          workflow_id=workflow_id))
        return None

    async def _failed(self, inst: Instance, fp: str, state: WorkflowState, *,
                      attempt: int | None = None) -> None:
        failure = state.failure()
        reason, blocked = failure.reason, failure.blocked
        status = state.status if state.status != "succeeded" else "failed"
        record = {
            "event": "finished", "instance": inst.name, "fingerprint": fp, "status": status,
            "workflowId": state.id, "cost": state.cost, "reason": reason, "blocked": blocked}
        if attempt is not None:  # a fused instance: its attempt under its own fingerprint
            record["attempt"] = attempt
        await asyncio.to_thread(self.journal.append, record)
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, status,
                                                        state.id, state.cost, reason)
        self.report(Event(inst.name, Phase.FAILED, status=status, detail=reason,
                          workflow_id=state.id, cost=state.cost))
        if self.options.fail_fast:
            self.stopping = True

    async def _collect(self, inst: Instance, fp: str, state: WorkflowState,
                       pending: list[dict[str, Any]] | None = None) -> Mapping[str, Any]:
        entry = await self._download(inst.name, inst.step, inst.type, fp, inst.request,
                                     inst.seed, inst.reroll, state, pending=pending)
        self.report(Event(inst.name, Phase.SUCCEEDED, workflow_id=state.id, cost=state.cost))
        return self.priors[entry.instance].output

    async def _download(self, name: str, step: str, type_: str, fp: str,
                        request: Mapping[str, Any], seed: int | None, reroll: int,
                        state: WorkflowState, *, event: str = "finished",
                        pending: list[dict[str, Any]] | None = None) -> LockedInstance:
        """Fetch every output blob, then record the entry (journal, then lockfile).
        With `pending`, the journal record is left there for the caller to write with
        its batch-mates' in one fsync (and to checkpoint the lockfile after)."""
        output = dict(state.steps[0].output or {})
        self.report(Event(name, Phase.DOWNLOADING, workflow_id=state.id))
        artifacts = await self.blobs.download_all(output, out_dir=self.out_dir / self.spec.name,
                                                  instance=name, lock_dir=self.lock_dir,
                                                  cache=self.stats)
        tokenized = tokenize_output(output, {a.blob_id: a.sha256 for a in artifacts})
        entry = LockedInstance(
            instance=name, step=step, type=type_, fingerprint=fp, request=_plain(request),
            seed=seed, workflow_id=state.id, cost=state.cost,
            completed_at=_completed_at(state, self.clock), output=strip_urls(tokenized),
            artifacts=artifacts, reroll=reroll, made_by=str(self.policy.origin))
        replaced = self.entries.get(name)
        self.entries[name] = entry
        # An entry the other API made is not an earlier paid result: it is not kept.
        if replaced is not None and replaced.fingerprint != fp and \
                Origin.of_entry(replaced.made_by) is self.policy.origin:
            await self._keep_earlier(replaced)
        self.priors[name] = prior_of(entry, self.lock_dir, None)
        record = {"event": event, "instance": name, "fingerprint": fp, "status": "succeeded",
                  "workflowId": state.id, "cost": state.cost, "entry": entry.to_dict()}
        self.result.results[name] = InstanceResult(name, step, "succeeded", state.id,
                                                   state.cost, artifacts=artifacts)
        self._dirty = True
        if pending is not None:
            pending.append(record)
            return entry
        await asyncio.to_thread(self.journal.append, record)
        await self._flush()
        return entry

    # -- what an interrupted run left in flight ---------------------------------------

    async def _settle_batches(self) -> None:
        """Settle each batch the interrupted run left in flight, as a unit, before anything
        new is packed (whatever this run's --only): find it by its workflow id or its
        externalId, follow it to its end and record every member. A batch the API never
        received is abandoned; its members are packed again like any other instance."""
        inflight = dict(self.policy.inflight)
        failed = dict(self.policy.failed)
        for key, names in self.history.batches.items():
            members = [n for n in names if n in inflight
                       and self.history.intents.get(n, {}).get("batch") == key]
            if not members:
                continue
            workflow_id = next((inflight[n].workflow_id for n in members
                                if inflight[n].workflow_id), None)
            state: WorkflowState | None = None
            try:
                if workflow_id is not None:
                    state = await self.backend.get(workflow_id, wait=self.options.wait_seconds)
                else:
                    state = await self._find_by_key(key)
            except ApiNotFound:
                state = None
            if state is None:
                status = "vanished" if workflow_id is not None else "abandoned"
                await asyncio.to_thread(self.journal.append_many, [{
                    "event": "settled", "instance": n, "status": status, "batch": key,
                    "fingerprint": inflight[n].fingerprint} for n in members])
                for n in members:
                    if status == "vanished":
                        failed[(n, inflight[n].fingerprint)] = "vanished"
                    del inflight[n]
                continue
            for n in members:
                self.report(Event(n, Phase.ATTACHED, status=state.status,
                                  workflow_id=state.id))
            state = await self._follow(members[0], state, DEFAULT_TIMEOUT, batch=True)
            self.budget.settle(0.0, state.cost)
            self.result.spent = self.budget.spent
            shares = apportion(state.cost, [None] * len(members))
            for n, share in zip(members, shares, strict=True):
                flying, intent = inflight.pop(n), self.history.intents.get(n, {})
                mine = member_state(state, n, share)
                request = intent.get("request")
                fp: str = flying.fingerprint
                refs = _journaled_refs(intent.get("refs"))
                index = lane_index(n)
                if refs and index is not None:  # a fused foreach instance: its real self
                    found = self._realize(str(intent.get("step", "")), index, refs[0].source)
                    request = found.request if found is not None else None
                    if found is not None:
                        self.alias[n] = found.name
                        fp = found.fingerprint or fp
                        n = found.name
                elif refs and isinstance(request, Mapping):
                    # Fused: its request (and fingerprint) from its sources' outputs,
                    # recorded just before (sources come first in a batch).
                    try:
                        request = {**request, "input": resolve_refs(
                            request.get("input"), refs,
                            {r.source: self.priors[self.alias.get(r.source, r.source)].output
                             for r in refs})}
                        fp = fingerprint(request)
                    except (LookupError, TypeError, IndexError):
                        request = None
                if _succeeded(mine) and isinstance(request, Mapping):
                    entry = await self._download(n, str(intent.get("step", "")),
                                                 str(intent.get("type", "")),
                                                 fp, request, flying.seed,
                                                 flying.reroll, mine, event="settled")
                    self.policy = replace(self.policy, priors={
                        **self.policy.priors, n: prior_of(entry, self.lock_dir, None)})
                    continue
                failure = mine.failure()
                failed[(n, fp)] = "blocked" if failure.blocked else "failed"
                await asyncio.to_thread(self.journal.append, {
                    "event": "settled", "instance": n, "status": mine.status,
                    "fingerprint": fp, "workflowId": mine.id, "attempt": flying.attempt,
                    "cost": mine.cost, "reason": failure.reason, "blocked": failure.blocked,
                    "batch": key})
        self.policy = replace(self.policy, inflight=inflight, failed=failed)

    async def _settle_orphans(self) -> None:
        """Settle every intent of the interrupted run that this run did not take over.

        Whatever `--only` selected, a workflow paid for before a crash is followed to
        its end and recorded (its outputs too), so the next run never pays for it again.
        One whose POST never reached the API is marked abandoned.
        """
        orphans = [f for n, f in self.policy.inflight.items() if n not in self.settled]
        for flying in orphans:
            intent = self.history.intents.get(flying.instance, {})
            state: WorkflowState | None = None
            try:
                if flying.workflow_id is not None:
                    state = await self.backend.get(flying.workflow_id,
                                                   wait=self.options.wait_seconds)
                else:
                    state = await self._find_by_key(str(intent.get("externalId", "")))
            except ApiNotFound:
                state = None
            if state is None:
                await asyncio.to_thread(self.journal.append, {
                    "event": "settled", "instance": flying.instance, "status": "abandoned",
                    "fingerprint": flying.fingerprint})
                continue
            state = await self._follow(flying.instance, state, DEFAULT_TIMEOUT)
            self.budget.settle(0.0, state.cost)
            self.result.spent = self.budget.spent
            request = intent.get("request")
            if _succeeded(state) and isinstance(request, Mapping):
                await self._download(flying.instance, str(intent.get("step", "")),
                                     str(intent.get("type", "")), flying.fingerprint,
                                     request, flying.seed, flying.reroll, state,
                                     event="settled")
                continue
            failure = state.failure()
            reason, blocked = failure.reason, failure.blocked
            await asyncio.to_thread(self.journal.append, {
                "event": "settled", "instance": flying.instance, "status": state.status,
                "fingerprint": flying.fingerprint, "workflowId": state.id,
                "cost": state.cost, "reason": reason, "blocked": blocked})

    async def _find_by_key(self, key: str) -> WorkflowState | None:
        """The run's workflow submitted with `key`, found by the run's tag (bounded pages)."""
        cursor: str | None = None
        for _ in range(100):
            page, cursor = await self.backend.query(tags=[run_tag(self.journal.run_id)],
                                                    cursor=cursor)
            for state in page:
                if state.external_id == key:
                    return state
            if not cursor or not page:
                break
        return None

    # -- the lockfile ----------------------------------------------------------------

    async def _flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        # A checkpoint rewrites the whole lockfile; spacing them by their own cost keeps
        # a run of 10,000 instances linear (the journal holds everything in between).
        gap = max(_FLUSH_EVERY, _FLUSH_SHARE * self._flush_cost)
        if not self._dirty or (not force and now - self._last_flush < gap):
            return
        async with self._flush_lock:
            self._dirty = False
            self._last_flush = now
            snapshot = Lockfile(self.spec.name, dict(self.entries), dict(self.spec.overrides),
                                dict(self.alternates))
            await asyncio.to_thread(snapshot.save, self.lock_path)
            self._flush_cost = time.monotonic() - now

    def _prune(self) -> None:
        """A full run forgets instances the pipeline no longer has: those of removed steps,
        and those a step that completed in this run no longer produces (a foreach item
        gone, a matrix value changed). A step that failed or was skipped keeps its
        entries; `--keep-stale` keeps everything."""
        if self.policy.only or self.options.keep_stale:
            return
        for name in list(self.entries):
            step = name.split("[", 1)[0]
            if step not in self.spec.steps or \
                    (step in self.complete and name not in self.complete[step]):
                del self.entries[name]
                self._dirty = True


def _succeeded(state: WorkflowState) -> bool:
    """Succeeded, and coherent about it (steps that all succeeded)."""
    return state.status == "succeeded" and state.malformed is None


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _completed_at(state: WorkflowState, clock: Callable[[], datetime]) -> str:
    value = state.raw.get("completedAt")
    if isinstance(value, str) and value:
        return value
    return clock().isoformat().replace("+00:00", "Z")




def _journaled_refs(value: object) -> tuple[Ref, ...]:
    """A fused intent's refs as journaled (`[[at, source, path], ...]`); () if damaged."""
    if not isinstance(value, list):
        return ()
    refs: list[Ref] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], list)
                and isinstance(item[1], str) and isinstance(item[2], str)
                and all(isinstance(k, str | int) for k in item[0])):
            return ()
        refs.append(Ref(tuple(item[0]), item[1], item[2]))
    return tuple(refs)


def _intent(t: _Ticket, batch: str) -> dict[str, Any]:
    """The journal record of one batch member, written before its batch's POST."""
    record: dict[str, Any] = {
        "event": "intent", "instance": t.inst.name, "step": t.inst.step, "type": t.inst.type,
        "fingerprint": t.fp, "externalId": t.key, "attempt": t.attempt, "seed": t.inst.seed,
        "reroll": t.inst.reroll, "request": _plain(resolve_pending(t.inst.request)),
        "batch": batch}
    if t.refs:
        record["refs"] = [[list(r.at), r.source, r.path] for r in t.refs]
    return record


def member_state(state: WorkflowState, name: str, cost: float) -> WorkflowState:
    """One instance's view of its batch: its own step, status and share of the cost, so
    the one-workflow code paths (failure reasons, outputs, the lock entry) serve it."""
    step = next((s for s in state.steps if s.name == name), None)
    raw: dict[str, Any] = {**state.raw, "cost": {"total": cost}}
    if step is None:
        raw.update(status="failed", steps=[{"$type": "", "name": name, "status": "failed",
                                            "jobs": [{"reason": "the API's answer has no "
                                                      "step for this instance"}]}])
        return WorkflowState.from_json(raw)
    status = step.status
    if status not in TERMINAL:  # the workflow ended, this step did not: it failed
        status = "failed"
    raw.update(status=status, steps=[{**step.raw, "status": status}])
    completed = step.raw.get("completedAt")
    if isinstance(completed, str) and completed:
        raw["completedAt"] = completed
    return WorkflowState.from_json(raw)
