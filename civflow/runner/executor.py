"""Execute a plan: schedule ready steps, resolve what only the run can, hand off the rest.

The executor decides nothing of its own: every instance is decided by the plan's
`Policy` (the same object `civflow plan` used), and only what is genuinely known at
run time (fan-out, `when`, upstream outputs) is resolved here. The work is split by
job:

- `recovery.recover` settles what an interrupted run left in flight and gives the
  `Policy` as it stands after that, once, before anything is scheduled;
- this module schedules steps as their upstream steps finish and turns a step's
  instances into workflows (batching and fusion by `grouping.workflows`, the rule
  `plan` and `render` show);
- `submission.Submitter` sends and follows one workflow of any number of members;
- `recording.Recorder` records every outcome, restores cached files, checkpoints the
  lockfile and prunes it.

Every submission is journaled (with its externalId) and fsync'd before the POST, so
a crash at any moment is followed by a run that re-attaches instead of paying again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from civflow.check import Checked
from civflow.check.render import resolve_pending
from civflow.client.base import Backend, WorkflowState
from civflow.errors import PipelineInvalid
from civflow.expand import (
    Context,
    Instance,
    StepResults,
    evaluate_when,
    fingerprint,
    resolve_step,
)
from civflow.grouping import Batch, Grouping, Ref, batch_size, foreach_lanes, workflows
from civflow.loading.model import StepSpec
from civflow.origin import Origin
from civflow.planning import Decision, Plan, PlannedInstance
from civflow.request import set_tag
from civflow.runner.blobs import BlobBook
from civflow.runner.budget import Budget
from civflow.runner.events import Event, Phase, Reporter, ignore
from civflow.runner.journaling import JournalWriter
from civflow.runner.recording import Halt, Recorder
from civflow.runner.recovery import recover
from civflow.runner.results import RunOptions, RunResult
from civflow.runner.resume import History
from civflow.runner.submission import Member, Submitter
from civflow.store.archive import EntryArchive
from civflow.store.journal import Journal, external_id
from civflow.store.lockfile import Lockfile
from civflow.store.objects import ObjectStore

__all__ = ["Executor"]


class Executor:
    """Runs one plan against one backend; create one per run."""

    def __init__(self, checked: Checked, backend: Backend, *, plan: Plan,
                 grouping: Grouping, journal: Journal,
                 store: ObjectStore, root: Path, lock: Lockfile | None, lock_path: Path,
                 archive: EntryArchive, history: History, options: RunOptions,
                 reporter: Reporter = ignore,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.checked = checked
        self.spec = checked.spec
        self.policy = self.planned_policy = plan.policy
        self.journal = JournalWriter(journal)  # every record of the run goes through it
        self.options = options
        self.report = reporter
        self.history = history
        out_dir = options.out_dir or root / "out"
        self.result = RunResult(journal.run_id, lockfile=lock_path,
                                artifacts_base=self.spec.lockfile_path.parent,
                                out_dir=out_dir / self.spec.name,
                                preview=self.policy.origin is Origin.EMULATOR)
        self.halt = Halt(options.fail_fast)
        blobs = BlobBook(backend, store)
        # Written at the end even when nothing ran: entries an interrupted run finished,
        # a lockfile not there yet, or one that records other vars than this run's.
        dirty = bool(history.recovered) or not lock_path.exists() or \
            (lock is not None and dict(lock.vars) != dict(self.spec.overrides))
        self.recorder = Recorder(self.spec, policy=self.policy, journal=self.journal, store=store,
                                 blobs=blobs, lock=lock, lock_path=lock_path, archive=archive,
                                 result=self.result, reporter=reporter, halt=self.halt,
                                 out_dir=out_dir, clock=clock, dirty=dirty)
        self.submitter = Submitter(checked, backend, recorder=self.recorder,
                                   policy=self.policy, journal=self.journal, blobs=blobs,
                                   budget=Budget(options.max_cost), options=options,
                                   halt=self.halt, reporter=reporter, clock=clock)
        self.submitter.alias.update(history.lanes)  # lanes an interrupted run named
        self.context = Context(self.spec, journal.run_id, checked.engine)
        self.complete: dict[str, frozenset[str]] = {}  # step -> its instances, all succeeded
        self.batch = batch_size(self.spec.batch)
        self.fuse = self.batch > 1 and self.spec.fuse  # fusion rides on batching
        graph = checked.graph  # read once: a step's grouping must not rescan the graph
        self.upstream = {name: frozenset(graph.upstream(name)) for name in self.spec.steps}
        self.guarded = frozenset(n for n, s in self.spec.steps.items()
                                 if isinstance(s.when, str))
        self.position = {name: i for i, name in enumerate(graph.order)}
        # Steps whose instances the plan rendered completely (from vars, matrix and fully
        # cached upstream outputs): the run uses them as they are, unless an upstream
        # step's cached outputs turned out lost and it ran again (`recorder.refreshed`).
        by_step: dict[str, list[Instance]] = {}
        self.decided: dict[str, PlannedInstance] = {}  # the plan's decision, by instance
        for p in plan.instances:
            by_step.setdefault(p.instance.step, []).append(p.instance)
            self.decided[p.name] = p
        self.planned = {name: found for name, found in by_step.items()
                        if all(i.resolved for i in found)}
        # The plan's grouping of those steps (and what is fused onto them): sent as it
        # stands whenever the run sends what the plan said (`_as_planned`).
        self.grouping = grouping
        self.planned_groups: dict[str, list[Batch]] = {}
        for batch in grouping.workflows:
            self.planned_groups.setdefault(batch.step, []).append(batch)

    # -- the schedule --------------------------------------------------------------

    async def run(self) -> RunResult:
        """Settle interrupted work, then run every wanted step as soon as its upstream
        steps are done."""
        graph = self.checked.graph
        wanted = self.policy.wanted
        order = [s for s in graph.order if s in wanted]
        pending = {s: sum(1 for u in graph.upstream(s) if u in wanted) for s in order}
        ready = deque(s for s in order if pending[s] == 0)
        failed: set[str] = set()
        running: dict[asyncio.Task[StepResults | None], str] = {}
        try:
            await self.recorder.flush(force=True)  # entries an interrupted run finished
            self.policy = await recover(self.policy, self.history, self.submitter)
            self.submitter.policy = self.policy  # read-only from here on
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
        except BaseException as exc:
            # Ctrl-C, or an error that ends the run (no funds, auth, network): stop the
            # other instances and checkpoint what already finished, so nothing paid for
            # waits on the journal alone. The run stays unfinished; a re-run resumes it.
            self.result.interrupted = isinstance(exc, asyncio.CancelledError | KeyboardInterrupt)
            self.halt.stopped = True
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await asyncio.shield(self.recorder.flush(force=True))
            await asyncio.shield(self.journal.append({"event": "interrupted"}))
            raise
        if not self.policy.only and not self.options.keep_stale:
            self.recorder.prune(self.complete)
        await self.recorder.finish()
        status = "failed" if self.result.failed else "succeeded"
        await self.journal.append({"event": "run-finished", "status": status})
        return self.result

    async def _run_step(self, name: str, failed: set[str]) -> StepResults | None:
        """None when the step failed or was skipped for a failure (dependents are skipped)."""
        step = self.spec.steps[name]
        dead = [u for u in self.checked.graph.upstream(name) if u in failed]
        if dead:
            self._skip_step(name, f"upstream {dead[0]} did not succeed")
            return None
        if self.halt.stopped:
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
            as_planned = known is not None and not set(self.checked.graph.upstream(name)) & \
                self.recorder.refreshed and not any(i.when_pending for i in known)
            if known is not None and as_planned:
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
        outputs = await self._run_instances(instances, step, self._lookup(step, instances),
                                            as_planned)
        if any(o is None for o in outputs):
            return None
        self.complete[name] = frozenset(i.name for i in instances)
        return StepResults.of(instances, [o for o in outputs if o is not None])

    def _skip_step(self, step: str, reason: str) -> None:
        self.recorder.skipped(step, step, reason)

    def _fail_step(self, step: str, reason: str) -> None:
        self.recorder.refused(step, step, reason)

    # -- a step's instances -----------------------------------------------------------

    def _lookup(self, step: StepSpec, instances: Sequence[Instance]) -> str:
        """The step's `set_tag`: from all its instances, whatever --only selected, so
        every clone and every selection tags (and finds) the step's work alike."""
        every = instances
        if step.name in self.policy.filtered:
            with contextlib.suppress(PipelineInvalid):
                every = resolve_step(self.checked, step, self.context, self.policy.seed)
        return set_tag(self.spec.name, step.name,
                       (i.fingerprint for i in every if i.fingerprint is not None))

    async def _run_instances(self, instances: Sequence[Instance], step: StepSpec,
                             lookup: str, as_planned: bool
                             ) -> list[Mapping[str, Any] | None]:
        """A step's instances: each decided by the plan's `Policy` (cached, failed last
        time, to run), the ones to run looked up among the workflows other clones
        submitted for this step, and the rest sent in the plan's workflows when they are
        the plan's instances (`as_planned`), else packed by the same rule into workflows
        of up to `self.batch` members (`grouping.workflows`; one member when `batch: 1`)."""
        outputs: dict[str, Mapping[str, Any] | None] = {}
        members: dict[str, Member] = {}
        names = [i.name for i in instances]
        # Every instance with its decision, for a grouping of the run's own (the plan's is
        # used as it is when the run sends what the plan said: then this is not needed).
        decided: list[tuple[PlannedInstance, Instance]] = []
        for inst in instances:
            if inst.name in self.submitter.fused_done:  # ran fused with its upstream
                outputs[inst.name] = self.submitter.fused_done[inst.name]
                continue
            planned = self._decision(inst, step, as_planned)
            decided.append((planned, inst))
            outputs[inst.name] = None
            if planned.decision is Decision.FAILED:
                self.recorder.refused(inst.name, inst.step, planned.reasons[0])
                continue
            reused = await self.recorder.reuse(inst, planned)
            if reused.settled:
                outputs[inst.name] = reused.output
                continue
            fp = inst.fingerprint
            if fp is None:
                self.recorder.refused(inst.name, inst.step,
                                      "its input could not be resolved from upstream outputs")
                continue
            attempt, _ = self.policy.attempt(inst, fp, fresh=reused.fresh)
            self.report(Event(inst.name, Phase.WAITING))
            members[inst.name] = Member.of(inst, fp, attempt, external_id(fp, attempt),
                                           planned.estimate)
        if not members:
            return [outputs.get(n) for n in names]
        attached, found = await self._elsewhere(members, lookup)
        taken = {m.name for _, mates in attached for m in mates}

        def mine(sending: Collection[str]) -> list[PlannedInstance]:
            """Each instance as the grouping sees it: to send, or as good as cached."""
            return [replace(p, instance=i, decision=(
                p.decision if i.name in sending else Decision.CACHED)) for p, i in decided]

        if taken and self.fuse:  # (what was taken still counts as sent here)
            self._attach_fused(step, mine(members), members, taken, found, attached)
        for name in taken:
            members.pop(name)
        plans = self._as_planned(step.name, members) if as_planned and not taken else None
        if plans is not None:
            groups, candidates = plans
        else:
            grouped = mine(members.keys() - taken)
            ahead = self._fusion_candidates(step.name, grouped) \
                if self.fuse and members else []
            groups = [g for g in workflows([*grouped, *ahead], self.batch,
                                           upstream=self.upstream, guarded=self.guarded,
                                           fuse=self.fuse)
                      if g.step == step.name]  # other steps' own batches: when they come up
            candidates = {p.name: p for p in ahead}
        for group in groups:
            for name in group.fused:
                members[name] = self._fused_member(candidates[name], group.refs[name],
                                                   members)
        done = await asyncio.gather(
            *(self.submitter.attach(mates, state) for state, mates in attached),
            *(self.submitter.submit([members[n] for n in group.members], lookup)
              for group in groups))
        for part in done:
            outputs.update(part)
        return [outputs.get(n) for n in names]

    def _decision(self, inst: Instance, step: StepSpec, as_planned: bool) -> PlannedInstance:
        """The plan's decision for an instance the plan rendered (the same `Policy`
        decided it: not decided twice), else the `Policy`'s for what the run resolved."""
        if as_planned and self.policy is self.planned_policy:
            return self.decided[inst.name]
        return self.policy.decide(inst, step)

    def _as_planned(self, step: str, members: Mapping[str, Member]
                    ) -> tuple[list[Batch], Mapping[str, PlannedInstance]] | None:
        """The plan's workflows of `step` (and the instances fused into them) when the run
        sends exactly the members the plan said it would: nothing was recovered, and none
        turned out lost or was found elsewhere. None otherwise: the run then groups what
        it does send by the same rule (a lost member is one more, one found elsewhere
        one less)."""
        if self.policy is not self.planned_policy:
            return None
        groups = self.planned_groups.get(step, [])
        sending = {n for g in groups for n in g.members if n not in g.refs}
        return (groups, self.grouping.instances) if sending == set(members) else None

    async def _elsewhere(self, members: dict[str, Member], lookup: str
                         ) -> tuple[list[tuple[WorkflowState, list[Member]]],
                                    Mapping[str, WorkflowState]]:
        """The members some clone already submitted (found by this step's `set_tag`),
        grouped by the workflow that carries them: attached to, never paid again (and
        every member key found). One that failed there is sent again only with
        --retry-failed, under a new key."""
        found = await self.submitter.elsewhere(lookup)
        by_workflow: dict[str, tuple[WorkflowState, list[Member]]] = {}
        for name, m in list(members.items()):
            state = found.get(m.key)
            if state is None or state.id is None:
                continue
            if state.is_terminal and state.status != "succeeded" and self.policy.retry_failed:
                attempt = m.attempt + 1
                members[name] = replace(m, attempt=attempt, key=external_id(m.fp, attempt))
                continue
            by_workflow.setdefault(state.id, (state, []))[1].append(m)
        return list(by_workflow.values()), found

    def _attach_fused(self, step: StepSpec, mine: Sequence[PlannedInstance],
                      members: Mapping[str, Member], taken: set[str],
                      found: Mapping[str, WorkflowState],
                      attached: list[tuple[WorkflowState, list[Member]]]) -> None:
        """Another clone's workflows carry, fused, the downstream instances of the members
        attached to: their keys depend only on their own request and their sources'
        keys, so they are recognised the same way and recorded from there, not paid for
        again when their step comes up."""
        ahead = self._fusion_candidates(step.name, mine)
        by_id = {state.id: mates for state, mates in attached}
        known, here = dict(members), set(taken)  # a chain: sources before what they feed
        for group in workflows([*mine, *ahead], self.batch, upstream=self.upstream,
                               guarded=self.guarded, fuse=True):
            for name in group.fused:
                refs = group.refs[name]
                if group.step != step.name or not all(r.source in here for r in refs):
                    continue
                fused = self._fused_member(next(p for p in ahead if p.name == name), refs,
                                           known)
                state = found.get(fused.key)
                if state is not None and state.id in by_id:
                    by_id[state.id].append(fused)
                    known[name] = fused
                    here.add(name)

    def _fusion_candidates(self, root: str, mine: Sequence[PlannedInstance]
                           ) -> list[PlannedInstance]:
        """The instances of the steps downstream of `root` that only need steps of its
        group, resolved as far as known now (their inputs wait on the group's outputs);
        `grouping.workflows` decides which of them are fused."""
        graph = self.checked.graph
        group = {root}
        by_step: dict[str, list[PlannedInstance]] = {root: list(mine)}
        out: list[PlannedInstance] = []
        for name in graph.order[self.position[root] + 1:]:
            if len(group) >= self.batch:
                break  # no lane outgrows a workflow (`grouping.workflows` says the same)
            ups = self.upstream[name]
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
                    i.name in self.submitter.fused_done or i.name in self.policy.inflight
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

    def _fused_member(self, planned: PlannedInstance, refs: tuple[Ref, ...],
                      members: Mapping[str, Member]) -> Member:
        """A fused instance's key: from its request (refs unknown) and its sources' keys,
        so the same sources and the same request give the same key on any machine."""
        inst = planned.instance
        fp = fingerprint(resolve_pending(inst.request))
        sources = sorted({members[r.source].key for r in refs})
        attempt = max(1, self.policy.attempts.get((inst.name, fp), 0))
        return Member.of(inst, fp, attempt, external_id("\n".join([fp, *sources]), attempt),
                         planned.estimate, refs)
