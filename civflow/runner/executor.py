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
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from civflow.check import Checked
from civflow.client.base import Backend, WorkflowState
from civflow.errors import ApiError, ApiNotFound, ApiProtocolError, PipelineInvalid, UnsafePath
from civflow.expand import Context, Instance, StepResults, evaluate_when, resolve_step
from civflow.load.model import StepSpec
from civflow.names import strip_urls
from civflow.plan import Decision, Plan, Prior
from civflow.request import run_tag, tokenize_output, workflow_body
from civflow.runner.blobs import BlobBook
from civflow.runner.budget import Budget, OverBudget
from civflow.runner.deadlines import DEFAULT_TIMEOUT, timed_out, timeout_seconds
from civflow.runner.events import Event, Phase, Reporter, ignore
from civflow.runner.results import InstanceResult, RunOptions, RunResult
from civflow.runner.resume import History
from civflow.runner.state import artifact_health, prior_of, stat_cache
from civflow.store.archive import EntryArchive
from civflow.store.journal import Journal, external_id
from civflow.store.lockfile import LockedInstance, Lockfile
from civflow.store.objects import ObjectStore

__all__ = ["Executor"]

_FLUSH_EVERY = 1.0  # seconds between lockfile checkpoints, at least
_FLUSH_SHARE = 10  # ... and at least this many times as long as the last one took



class _Stop(Exception):
    """Raised inside instance tasks when the run stops starting new work."""


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
                                out_dir=self.out_dir / self.spec.name)
        self.budget = Budget(options.max_cost)
        self.slots = asyncio.Semaphore(max(1, options.concurrency))
        self.download_slots = asyncio.Semaphore(8)
        self.stopping = False
        self.context = Context(self.spec, journal.run_id)
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
            self.journal.append({"event": "interrupted"})
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
            instances = [i for i in resolve_step(self.checked, step, self.context,
                                                 self.policy.seed)
                         if self.policy.selected(i.name, name)]
        except PipelineInvalid as exc:
            # A template that fails on real outputs is a located failure of this step;
            # it never lets a guarded, paid step run.
            self._fail_step(name, exc.render())
            return None
        outputs = await asyncio.gather(*(self._run_instance(i, step) for i in instances))
        if any(o is None for o in outputs):
            return None
        self.complete[name] = frozenset(i.name for i in instances)
        return StepResults(tuple(o for o in outputs if o is not None))

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
        fresh = False
        if planned.decision is Decision.CACHED:
            entry, prior = await self._current(inst)
            if prior.artifacts_ok or await self._repair(entry):
                self.result.results[inst.name] = InstanceResult(
                    inst.name, inst.step, "cached", entry.workflow_id, entry.cost,
                    artifacts=entry.artifacts)
                self.report(Event(inst.name, Phase.CACHED))
                return prior.output
            fresh = True  # the outputs are gone for good: run it again, with a new key
        if fp is None:
            self._fail_step(inst.name, "its input could not be resolved from upstream outputs")
            return None
        try:
            return await self._submit_and_collect(inst, step, fp, planned.estimate, fresh)
        except _Stop as stop:
            self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "not-run",
                                                            reason=str(stop))
            self.report(Event(inst.name, Phase.SKIPPED, detail=str(stop)))
            return None

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

    async def _follow(self, name: str, state: WorkflowState, limit: float) -> WorkflowState:
        """Long-poll until terminal; past `limit` seconds cancel the workflow (it failed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        if not state.is_terminal and state.id is None:
            # Nothing to follow; the intent stays unsettled, so the next run re-sends the
            # same externalId and gets the workflow back instead of paying again.
            raise ApiProtocolError("the API accepted a workflow but sent no id for it",
                                   hint="run again: civflow re-attaches by its externalId")
        while not state.is_terminal and state.id is not None:
            left = deadline - loop.time()
            if left <= 0:
                with contextlib.suppress(ApiError):  # it may have finished meanwhile
                    await self.backend.cancel(state.id)
                return timed_out(state, limit)
            step = state.steps[0] if state.steps else None
            self.report(Event(name, Phase.RUNNING, status=state.status, workflow_id=state.id,
                              progress=step.progress if step else None,
                              queue_position=step.queue_position if step else None))
            # A long-poll; the client pauses before answering when the server ignores
            # `wait`, so a server that answers at once is never polled in a tight loop.
            state = await self.backend.get(state.id,
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

    async def _failed(self, inst: Instance, fp: str, state: WorkflowState) -> None:
        failure = state.failure()
        reason, blocked = failure.reason, failure.blocked
        status = state.status if state.status != "succeeded" else "failed"
        await asyncio.to_thread(self.journal.append, {
            "event": "finished", "instance": inst.name, "fingerprint": fp, "status": status,
            "workflowId": state.id, "cost": state.cost, "reason": reason, "blocked": blocked})
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, status,
                                                        state.id, state.cost, reason)
        self.report(Event(inst.name, Phase.FAILED, status=status, detail=reason,
                          workflow_id=state.id, cost=state.cost))
        if self.options.fail_fast:
            self.stopping = True

    async def _collect(self, inst: Instance, fp: str, state: WorkflowState
                       ) -> Mapping[str, Any]:
        entry = await self._download(inst.name, inst.step, inst.type, fp, inst.request,
                                     inst.seed, inst.reroll, state)
        self.report(Event(inst.name, Phase.SUCCEEDED, workflow_id=state.id, cost=state.cost))
        return self.priors[entry.instance].output

    async def _download(self, name: str, step: str, type_: str, fp: str,
                        request: Mapping[str, Any], seed: int | None, reroll: int,
                        state: WorkflowState, *, event: str = "finished") -> LockedInstance:
        """Fetch every output blob, then record the entry (journal, then lockfile)."""
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
            artifacts=artifacts, reroll=reroll)
        replaced = self.entries.get(name)
        self.entries[name] = entry
        if replaced is not None and replaced.fingerprint != fp:
            await self._keep_earlier(replaced)
        self.priors[name] = prior_of(entry, self.lock_dir, None)
        await asyncio.to_thread(self.journal.append, {
            "event": event, "instance": name, "fingerprint": fp, "status": "succeeded",
            "workflowId": state.id, "cost": state.cost, "entry": entry.to_dict()})
        self.result.results[name] = InstanceResult(name, step, "succeeded", state.id,
                                                   state.cost, artifacts=artifacts)
        self._dirty = True
        await self._flush()
        return entry

    # -- what an interrupted run left in flight ---------------------------------------

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


