"""Execute a checked pipeline: schedule ready steps, submit, wait, download, record.

Every submission is journaled (with its externalId) and fsync'd before the POST,
so a crash at any moment is followed by a re-run that re-attaches instead of
paying again. The lockfile is a checkpoint written at most once a second; the
journal holds everything since, and a resumed run folds it back in.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from civflow.backends.base import Backend, WorkflowState
from civflow.plan import (
    Instance,
    PlanOptions,
    Prior,
    StepResults,
    estimate_instance,
    evaluate_when,
    resolve_step,
    selected_steps,
    step_context,
    tokenize_output,
    workflow_body,
)
from civflow.run.blobs import BlobBook
from civflow.run.events import Event, Phase, Reporter, ignore
from civflow.run.state import prior_of
from civflow.spec.check import Checked
from civflow.store.journal import Journal, external_id
from civflow.store.lockfile import Artifact, LockedInstance, Lockfile
from civflow.store.objects import ObjectStore

SEED_MAX = 2**32 - 1
_FLUSH_EVERY = 1.0  # seconds between lockfile checkpoints


@dataclass(frozen=True)
class RunOptions:
    plan: PlanOptions = field(default_factory=PlanOptions)
    concurrency: int = 8
    max_cost: float | None = None
    fail_fast: bool = False
    retry_failed: bool = False
    out_dir: Path | None = None  # default <root>/out
    wait_seconds: int = 30  # long-poll length per GET (the API caps near 100 s)


@dataclass
class InstanceResult:
    name: str
    step: str
    status: str  # succeeded | cached | failed | expired | canceled | skipped | not-run
    workflow_id: str | None = None
    cost: float | None = None
    reason: str | None = None
    artifacts: tuple[Artifact, ...] = ()


@dataclass
class RunResult:
    run_id: str
    results: dict[str, InstanceResult] = field(default_factory=dict)
    spent: float = 0.0
    interrupted: bool = False
    budget_stop: bool = False
    lockfile: Path | None = None
    out_dir: Path | None = None

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results.values()
                if r.status in ("failed", "expired", "canceled")]

    def count(self, status: str) -> int:
        return sum(1 for r in self.results.values() if r.status == status)


class _Stop(Exception):
    """Raised inside instance tasks when the run stops starting new work."""


class Executor:
    """Runs one pipeline against one backend; create one per run."""

    def __init__(self, checked: Checked, backend: Backend, *, journal: Journal,
                 store: ObjectStore, root: Path, priors: Mapping[str, Prior],
                 lock: Lockfile | None, options: RunOptions,
                 reporter: Reporter = ignore,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 draw_seed: Callable[[], int] | None = None) -> None:
        self.checked = checked
        self.spec = checked.spec
        self.backend = backend
        self.journal = journal
        self.store = store
        self.root = root
        self.options = options
        self.report = reporter
        self.clock = clock
        self.draw_seed = draw_seed or (lambda: secrets.randbelow(SEED_MAX))
        self.out_dir = options.out_dir or root / "out"
        self.lock_dir = self.spec.lockfile_path.parent
        self.blobs = BlobBook(backend, store)
        self.entries: dict[str, LockedInstance] = dict(lock.instances) if lock else {}
        self.priors = dict(priors)
        self.result = RunResult(journal.run_id, lockfile=self.spec.lockfile_path,
                                out_dir=self.out_dir / self.spec.name)
        self.slots = asyncio.Semaphore(max(1, options.concurrency))
        self.download_slots = asyncio.Semaphore(8)
        self.stopping = False
        self._dirty = False
        self._last_flush = 0.0
        self._resume = journal.state()
        graph = checked.graph
        plan_options = options.plan
        every = set(self.spec.steps)
        self.forced = graph.downstream_closure(
            every if "*" in plan_options.force else set(plan_options.force) & every)
        self.rerolled = graph.downstream_closure(set(plan_options.reroll) & every)
        self.wanted = selected_steps(checked, plan_options.only) if plan_options.only else every
        self.seeds = {name: p.seed for name, p in self.priors.items()
                      if p.seed is not None and name.split("[", 1)[0] not in plan_options.reroll}
        # Seeds drawn by an interrupted run live only in its intents until the instance
        # finishes; without them a resumed run would draw anew, change the fingerprint
        # and pay for a second workflow instead of re-attaching to the first.
        for record in journal.records():
            name, seed = record.get("instance"), record.get("seed")
            if record.get("event") == "intent" and isinstance(name, str) \
                    and isinstance(seed, int) and name.split("[", 1)[0] not in plan_options.reroll:
                self.seeds[name] = seed
        for entry in self.entries.values():
            self.blobs.learn_artifacts(entry.artifacts)

    # -- the schedule --------------------------------------------------------------

    async def run(self) -> RunResult:
        """Run every wanted step as soon as its upstream steps are done."""
        graph = self.checked.graph
        known: dict[str, StepResults] = {}
        failed_steps: set[str] = set()
        order = [s for s in graph.order if s in self.wanted]
        waiting = set(order)
        running: dict[asyncio.Task[StepResults | None], str] = {}
        try:
            while waiting or running:
                for step in [s for s in order if s in waiting]:
                    ups = graph.upstream(step)
                    if all(u in known or u in failed_steps or u not in self.wanted for u in ups):
                        waiting.discard(step)
                        task = asyncio.create_task(self._run_step(step, known, failed_steps))
                        running[task] = step
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    outcome = task.result()
                    if outcome is None:
                        failed_steps.add(step)
                    else:
                        known[step] = outcome
        except BaseException as exc:
            # Ctrl-C, or an error that ends the run (no funds, auth, network): stop the
            # other instances and checkpoint what already finished, so nothing paid for
            # waits on the journal alone. The run stays unfinished; a re-run resumes it.
            self.result.interrupted = isinstance(exc, asyncio.CancelledError)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self._flush(force=True)
            self.journal.append({"event": "interrupted"})
            raise
        self._finish_lockfile()
        self.journal.append({"event": "run-finished",
                             "status": "failed" if self.result.failed else "succeeded"})
        return self.result

    async def _run_step(self, name: str, known: dict[str, StepResults],
                        failed_steps: set[str]) -> StepResults | None:
        """None when the step failed or was skipped (its dependents are skipped too)."""
        step = self.spec.steps[name]
        ups = self.checked.graph.upstream(name)
        dead = [u for u in ups if u in failed_steps or known.get(u, StepResults(())).skipped]
        context = step_context(self.spec, known, self.journal.run_id)
        if dead:
            self._skip_step(name, f"upstream {dead[0]} did not succeed")
            return None
        if self.stopping:
            self._skip_step(name, "the run stopped before this step")
            return None
        if evaluate_when(self.checked, step, context) is False:
            self._skip_step(name, f"when: {step.when} is false")
            return StepResults((), skipped=True)
        instances = resolve_step(self.checked, step, context, self.seeds, self.draw_seed)
        tasks = [asyncio.create_task(self._run_instance(inst)) for inst in instances]
        outputs = await asyncio.gather(*tasks)
        if any(o is None for o in outputs):
            return None
        return StepResults(tuple(o for o in outputs if o is not None))

    def _skip_step(self, step: str, reason: str) -> None:
        self.result.results[f"{step}"] = InstanceResult(step, step, "skipped", reason=reason)
        self.report(Event(step, Phase.SKIPPED, detail=reason))

    # -- one instance --------------------------------------------------------------

    async def _run_instance(self, inst: Instance) -> Mapping[str, Any] | None:
        """The tokenized output of the instance, or None if it did not succeed."""
        fp = inst.fingerprint
        assert fp is not None, "resolve_step gives resolved instances at run time"
        prior = self.priors.get(inst.name)
        forced = inst.step in self.forced or inst.step in self.rerolled
        if prior and not forced and prior.fingerprint == fp and prior.artifacts_ok:
            self.result.results[inst.name] = InstanceResult(
                inst.name, inst.step, "cached", self.entries[inst.name].workflow_id,
                prior.cost, artifacts=self.entries[inst.name].artifacts)
            self.report(Event(inst.name, Phase.CACHED))
            return prior.output
        try:
            return await self._submit_and_collect(inst, fp)
        except _Stop as stop:
            self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "not-run",
                                                            reason=str(stop))
            self.report(Event(inst.name, Phase.SKIPPED, detail=str(stop)))
            return None

    def _attempt(self, inst: Instance, fp: str) -> tuple[int, str | None]:
        """(attempt, workflow id already submitted in this run, if any)."""
        seen = self._resume.get(inst.name)
        if seen is not None and seen.fingerprint == fp:
            if seen.finished_status in ("failed", "expired", "canceled") and \
                    self.options.retry_failed and not seen.blocked:
                return seen.attempt + 1, None
            return seen.attempt, seen.workflow_id
        attempt = 1
        # A forced instance must not reuse an earlier run's key: the API would hand back
        # the workflow it already has instead of running it again.
        if self.options.retry_failed or inst.step in self.forced:
            attempt = self.journal.highest_attempt(inst.name, fp) + 1 or 1
        return attempt, None

    async def _submit_and_collect(self, inst: Instance, fp: str) -> Mapping[str, Any] | None:
        attempt, workflow_id = self._attempt(inst, fp)
        key = external_id(fp, attempt)
        self.report(Event(inst.name, Phase.WAITING))
        async with self.slots:
            if self.stopping:
                raise _Stop("the run stopped before this instance")
            if workflow_id is None:
                self._check_budget(inst)
                body = workflow_body(self.spec, inst, run_id=self.journal.run_id,
                                     external_id=key,
                                     input_override=await self.blobs.substitute(
                                         inst.input, self.clock()))
                self.journal.append({"event": "intent", "instance": inst.name,
                                     "fingerprint": fp, "externalId": key, "attempt": attempt,
                                     "seed": inst.seed})
                # The POST itself long-polls: a short job costs one request. A crash
                # before the answer is safe: the re-sent POST carries the journaled
                # externalId and gets the same workflow back, and `civflow cancel`
                # finds in-flight workflows by the run's tag.
                state = await self.backend.submit(body, wait=self.options.wait_seconds)
                self.journal.append({"event": "submitted", "instance": inst.name,
                                     "workflowId": state.id})
                self.report(Event(inst.name, Phase.SUBMITTED, status=state.status,
                                  workflow_id=state.id, cost=state.cost))
            else:
                state = await self.backend.get(workflow_id, wait=self.options.wait_seconds)
                self.report(Event(inst.name, Phase.ATTACHED, status=state.status,
                                  workflow_id=workflow_id))
            while not state.is_terminal:
                assert state.id is not None
                step = state.steps[0] if state.steps else None
                self.report(Event(inst.name, Phase.RUNNING, status=state.status,
                                  workflow_id=state.id,
                                  progress=step.progress if step else None,
                                  queue_position=step.queue_position if step else None))
                state = await self.backend.get(state.id, wait=self.options.wait_seconds)
        self.result.spent += state.cost
        if state.status != "succeeded":
            self._failed(inst, fp, state)
            return None
        async with self.download_slots:
            return await self._collect(inst, fp, state)

    def _check_budget(self, inst: Instance) -> None:
        limit = self.options.max_cost
        if limit is None:
            return
        nxt = estimate_instance(inst) or 0.0
        if self.result.spent + nxt > limit:
            self.result.budget_stop = True
            self.stopping = True
            raise _Stop(f"--max-cost {limit:g}: spent {self.result.spent:g} Buzz, "
                        f"the next workflow is estimated at {nxt:g}")

    def _failed(self, inst: Instance, fp: str, state: WorkflowState) -> None:
        reason = _failure_reason(state)
        blocked = "blocked" in (reason or "")
        self.journal.append({"event": "finished", "instance": inst.name, "fingerprint": fp,
                             "status": state.status, "workflowId": state.id,
                             "cost": state.cost, "reason": reason, "blocked": blocked})
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, state.status,
                                                        state.id, state.cost, reason)
        self.report(Event(inst.name, Phase.FAILED, status=state.status, detail=reason,
                          workflow_id=state.id, cost=state.cost))
        if self.options.fail_fast:
            self.stopping = True

    async def _collect(self, inst: Instance, fp: str, state: WorkflowState
                       ) -> Mapping[str, Any]:
        step_state = state.steps[0]
        output = dict(step_state.output or {})
        self.report(Event(inst.name, Phase.DOWNLOADING, workflow_id=state.id))
        artifacts = await self.blobs.download_all(output, self.out_dir / self.spec.name /
                                                  inst.name, self.lock_dir)
        sha_by_blob = {a.blob_id: a.sha256 for a in artifacts}
        tokenized = tokenize_output(output, sha_by_blob)
        entry = LockedInstance(
            instance=inst.name, step=inst.step, type=inst.type, fingerprint=fp,
            request=_plain(inst.request), seed=inst.seed, workflow_id=state.id,
            cost=state.cost, completed_at=_completed_at(state, self.clock),
            output=_strip(tokenized), artifacts=artifacts)
        self.entries[inst.name] = entry
        self.priors[inst.name] = prior_of(entry, self.lock_dir, None)
        self.journal.append({"event": "finished", "instance": inst.name, "fingerprint": fp,
                             "status": "succeeded", "workflowId": state.id, "cost": state.cost,
                             "entry": entry.to_dict()})
        self.result.results[inst.name] = InstanceResult(inst.name, inst.step, "succeeded",
                                                        state.id, state.cost,
                                                        artifacts=artifacts)
        self.report(Event(inst.name, Phase.SUCCEEDED, workflow_id=state.id, cost=state.cost))
        self._dirty = True
        self._flush()
        return tokenized

    # -- the lockfile ----------------------------------------------------------------

    def _flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not self._dirty or (not force and now - self._last_flush < _FLUSH_EVERY):
            return
        Lockfile(self.spec.name, dict(self.entries)).save(self.spec.lockfile_path)
        self._dirty = False
        self._last_flush = now

    def _finish_lockfile(self) -> None:
        """Final checkpoint; a full run also forgets instances the pipeline no longer has."""
        if not self.options.plan.only:
            live = set(self.result.results)
            stale = [n for n in self.entries if n not in live
                     and n.split("[", 1)[0] not in self.spec.steps]
            for name in stale:
                del self.entries[name]
                self._dirty = True
        self._flush(force=True)


def _strip(output: Mapping[str, Any]) -> dict[str, Any]:
    """The lockfile keeps no URL at all, not even a content token."""
    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v) for k, v in value.items() if k != "url"}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    stripped: dict[str, Any] = walk(output)
    return stripped


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


def _failure_reason(state: WorkflowState) -> str | None:
    for step in state.steps:
        for job in step.raw.get("jobs") or []:
            for key in ("blockedReason", "reason"):
                if job.get(key):
                    return str(job[key])
        errors = (step.output or {}).get("errors")
        if errors:
            return "; ".join(map(str, errors))
    return None
