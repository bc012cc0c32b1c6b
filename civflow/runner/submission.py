"""One workflow of any number of members: reserve, journal, submit, follow, record.

A single instance is a workflow of one member; a batch is the same thing with more.
The same code also settles a workflow this run did not submit: one an interrupted run
left in flight (`civflow.runner.recovery`) or one another clone already submitted for
the same members (found by its step's `set_tag`, `Submitter.elsewhere`).

Each member is recorded as soon as its own step succeeds (one journal fsync per poll
for all members that finished in it), so nobody waits on a slow batch-mate, and a
crash loses nothing that already finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from civflow.check import Checked
from civflow.check.render import resolve_pending
from civflow.client.base import TERMINAL, Backend, WorkflowState
from civflow.errors import ApiError, ApiNotFound, ApiProtocolError, PipelineInvalid
from civflow.expand import Context, Instance, StepResults, fingerprint, resolve_step
from civflow.grouping import Ref, apportion, lane_index, resolve_refs, with_refs
from civflow.planning import Policy
from civflow.request import batch_body, run_tag
from civflow.runner.blobs import BlobBook, find_blobs
from civflow.runner.budget import Budget, OverBudget
from civflow.runner.deadlines import timed_out_steps, timeout_seconds
from civflow.runner.events import Event, Phase, Reporter
from civflow.runner.journaling import JournalWriter
from civflow.runner.recording import Halt, Recorder
from civflow.runner.results import RunOptions, Status
from civflow.store.journal import workflow_external_id
from civflow.store.lockfile import plain

__all__ = ["Member", "Submitter", "member_state"]

_LOOKUP_PAGES = 20  # pages of 100 workflows asked for one step's earlier submissions


@dataclass(frozen=True)
class Member:
    """One instance in a workflow: what it is recorded as, and its own key."""

    name: str
    step: str
    type: str
    fp: str  # of a fused member: of its request with the refs still unknown
    attempt: int
    key: str
    request: Mapping[str, Any] | None  # plain, as journaled (refs unresolved)
    seed: int | None = None
    reroll: int = 0
    estimate: float | None = None
    refs: tuple[Ref, ...] = ()  # a fused member's inputs from its batch-mates' outputs
    inst: Instance | None = field(default=None, compare=False)  # to submit it

    @classmethod
    def of(cls, inst: Instance, fp: str, attempt: int, key: str, estimate: float | None,
           refs: tuple[Ref, ...] = ()) -> Member:
        return cls(inst.name, inst.step, inst.type, fp, attempt, key,
                   plain(resolve_pending(inst.request)), inst.seed, inst.reroll, estimate,
                   refs, inst)

    def intent(self, workflow: str) -> dict[str, Any]:
        """The journal record written before the workflow's POST."""
        record: dict[str, Any] = {
            "event": "intent", "instance": self.name, "step": self.step, "type": self.type,
            "fingerprint": self.fp, "externalId": self.key, "attempt": self.attempt,
            "seed": self.seed, "reroll": self.reroll, "request": self.request}
        if workflow != self.key:
            record["batch"] = workflow
        if self.refs:
            record["refs"] = [[list(r.at), r.source, r.path] for r in self.refs]
        return record


class Submitter:
    """Sends and settles workflows for one run (see the module doc)."""

    def __init__(self, checked: Checked, backend: Backend, *, recorder: Recorder,
                 policy: Policy, journal: JournalWriter, blobs: BlobBook, budget: Budget,
                 options: RunOptions, halt: Halt, reporter: Reporter,
                 clock: Callable[[], datetime]) -> None:
        self.checked = checked
        self.spec = checked.spec
        self.backend = backend
        self.recorder = recorder
        self.policy = policy
        self.journal = journal
        self.blobs = blobs
        self.budget = budget
        self.options = options
        self.halt = halt
        self.report = reporter
        self.clock = clock
        self.slots = asyncio.Semaphore(max(1, options.concurrency))
        self.download_slots = asyncio.Semaphore(8)
        # Fused members settled before their own step came up (name -> output or None),
        # and a fused foreach member's lane name -> the name its item gave it.
        self.fused_done: dict[str, Mapping[str, Any] | None] = {}
        self.alias: dict[str, str] = {}

    # -- sending -------------------------------------------------------------------------

    async def submit(self, members: list[Member], lookup: str | None
                     ) -> dict[str, Mapping[str, Any] | None]:
        """Send one workflow of `members` (intents journaled first), follow it, record
        each member on its own: a failed step fails only its instance."""
        out: dict[str, Mapping[str, Any] | None] = {m.name: None for m in members}
        async with self.slots:
            if self.halt.stopped:
                for m in members:
                    self.recorder.skipped(m.name, m.step, "the run stopped before this "
                                          "instance", status=Status.NOT_RUN)
                return out
            members, charge = await self.reserve(members)
            if not members:
                return out
            key = workflow_external_id([(m.name, m.key) for m in members])
            body = await self._body(members, key, lookup)
            try:
                await self.journal.append_many([m.intent(key) for m in members])
                # A crash from here on is safe: the next run finds this workflow by its
                # externalId and settles its members together.
                state = await self.backend.submit(body, wait=self.options.wait_seconds)
            except BaseException:
                self.budget.release(charge)
                raise
            await self.journal.append_many([
                {"event": "submitted", "instance": m.name, "workflowId": state.id,
                 **({"batch": key} if key != m.key else {})} for m in members])
            for m in members:
                self.report(Event(m.name, Phase.SUBMITTED, status=state.status,
                                  workflow_id=state.id, cost=state.cost))
            try:
                state = await self.follow_and_record(members, state, out)
            except BaseException:
                self.budget.release(charge)
                raise
            if not _succeeded(state):
                self.halt.failure()  # before the slot is free for the next workflow
        self.budget.settle(charge, state.cost)
        self.recorder.result.spent = self.budget.spent
        return out

    async def _body(self, members: Sequence[Member], key: str | None,
                    lookup: str | None) -> dict[str, Any]:
        parts = []
        for m in members:
            assert m.inst is not None, "only members of this run are submitted"
            parts.append((m.inst, await self.blobs.substitute(
                with_refs(m.inst.input, m.refs), self.clock())))
        return batch_body(self.spec, parts, run_id=self.journal.run_id, external_id=key,
                          keys=[m.key for m in members] if key is not None else None,
                          lookup=lookup)

    async def reserve(self, members: list[Member]) -> tuple[list[Member], float]:
        """Reserve the workflow's price under --max-cost before its POST: the members
        that fit are sent, the run stops for the others. 0 reserved without a cap."""
        if self.budget.limit is None:
            return members, 0.0
        keep: list[Member] = []
        total = 0.0
        if any(m.estimate is None for m in members):  # no offline formula: ask the API
            body = await self._body(members, None, None)
            whole = (await self.backend.submit(body, whatif=True)).cost
            if whole <= self.budget.room():
                keep, total = list(members), whole
            next_price = whole
        else:
            for m in members:
                assert m.estimate is not None
                if total + m.estimate > self.budget.room():
                    break
                keep.append(m)
                total += m.estimate
            next_price = (members[len(keep)].estimate or 0.0) if len(keep) < len(members) \
                else 0.0
        if keep:
            self.budget.reserve(total)
        if len(keep) < len(members):
            try:  # the cap's own words for what did not fit
                self.budget.reserve(next_price)
                self.budget.release(next_price)
                reason = f"--max-cost {self.budget.limit:g}: no room left"
            except OverBudget as over:
                reason = str(over)
            self.halt.stopped = True
            self.recorder.result.budget_stop = reason
            for m in members[len(keep):]:
                self.recorder.skipped(m.name, m.step, reason, status=Status.NOT_RUN)
        return keep, total if keep else 0.0

    # -- following and recording -----------------------------------------------------------

    async def follow_and_record(self, members: Sequence[Member], state: WorkflowState,
                                out: dict[str, Mapping[str, Any] | None], *,
                                event: str = "finished",
                                limit: float | None = None) -> WorkflowState:
        """Follow a workflow to its end, recording each member the moment its own step
        succeeds, then the rest (failures, fused members after their sources)."""
        done: set[str] = set()

        async def record(state: WorkflowState, final: bool) -> None:
            shares = apportion(state.cost, [m.estimate for m in members])
            pending: list[dict[str, Any]] = []
            ended: list[tuple[Member, WorkflowState]] = []
            for m, share in zip(members, shares, strict=True):
                if m.name in done or m.refs:
                    continue
                mine = member_state(state, m.name, share, final=final)
                if mine is None:
                    continue  # still running
                done.add(m.name)
                ended.append((m, mine))
            try:
                await self._each(ended, partial(self._record, out=out, pending=pending,
                                                event=event))
            finally:
                await self.recorder.journal_many(pending)
            if final:
                await self._record_fused_waves(
                    [(m, share) for m, share in zip(members, shares, strict=True)
                     if m.refs and m.name not in done], state, done, event)

        if limit is None:
            # A fused chain runs its steps one after another: their timeouts add up.
            limit = sum(timeout_seconds(self.spec.steps[s]) for s in {m.step for m in members}
                        if s in self.spec.steps) + self.options.timeout_grace
        state = await self.follow(members[0].name, state, limit,
                                  on_update=lambda s: record(s, final=False))
        await record(state, final=True)
        return state

    async def _record(self, m: Member, mine: WorkflowState,
                      out: dict[str, Mapping[str, Any] | None], pending: list[dict[str, Any]],
                      event: str) -> None:
        if not _succeeded(mine) or not isinstance(m.request, Mapping):
            self.recorder.failed(m.name, m.step, m.fp, mine, pending=pending, event=event,
                                 attempt=m.attempt if event != "finished" else None)
            return
        await self.recorder.succeeded(m.name, m.step, m.type, m.fp, m.request, m.seed,
                                      m.reroll, mine, event=event, pending=pending)
        out[m.name] = self.recorder.priors[m.name].output

    async def _record_fused_waves(self, fused: list[tuple[Member, float]],
                                  state: WorkflowState, done: set[str], event: str) -> None:
        """Record a finished workflow's fused members, sources first (a fused request
        needs its sources' outputs): in waves, each wave's members side by side and
        their journal records in one fsync, before the next wave starts."""
        waiting = {m.name: (m, share) for m, share in fused}
        while waiting:
            wave = [(m, share) for m, share in waiting.values()
                    if not any(ref.source in waiting for ref in m.refs)] \
                or list(waiting.values())  # no member refers to itself; never stall
            pending: list[dict[str, Any]] = []
            ended: list[tuple[Member, WorkflowState]] = []
            for m, share in wave:
                del waiting[m.name]
                done.add(m.name)
                mine = member_state(state, m.name, share, final=True)
                assert mine is not None
                ended.append((m, mine))
            try:
                await self._each(ended, partial(self._record_fused, event=event, pending=pending))
            finally:
                await self.recorder.journal_many(pending)

    async def _record_fused(self, m: Member, mine: WorkflowState, event: str,
                            pending: list[dict[str, Any]]) -> None:
        """Record a fused member as if it had been sent alone after its sources: its
        request (so its fingerprint) from their recorded outputs, its own result. A
        fused foreach member gets its real name (from its item) here; the journal
        record keeps its lane name too, so a later run knows it settled."""
        name, request, fp = m.name, None, m.fp
        index = lane_index(m.name)
        lane = m.name if index is not None else None
        sources = self._source_outputs(m.refs, mine.id)
        if index is not None:
            found = self._realize(m.step, index, m.refs[0].source) \
                if m.refs[0].source in sources else None
            if found is not None:
                self.alias[m.name] = found.name
                name, request = found.name, plain(resolve_pending(found.request))
                fp = found.fingerprint or fp
        elif isinstance(m.request, Mapping):
            with contextlib.suppress(LookupError, TypeError, IndexError):
                request = {**m.request, "input": resolve_refs(m.request.get("input"),
                                                              m.refs, sources)}
                fp = fingerprint(request)
        self.fused_done[name] = None
        if request is None or not _succeeded(mine):
            self.recorder.failed(name, m.step, fp, mine, pending=pending, attempt=m.attempt,
                                 event=event, lane=lane)
            return
        await self.recorder.succeeded(name, m.step, m.type, fp, request, m.seed, m.reroll,
                                      mine, event=event, lane=lane, pending=pending)
        self.fused_done[name] = self.recorder.priors[name].output

    async def _each(self, ended: Sequence[tuple[Member, WorkflowState]],
                    record: Callable[[Member, WorkflowState], Awaitable[None]]) -> None:
        """Record the members that ended: in turn those with nothing to wait for (a task
        each would only cost time: a sweep records thousands), then side by side those
        that wait: for files to fetch (each holding a download slot), or for an earlier
        entry to be set aside in the archive (`Recorder.sets_aside`), which a lane's
        real name may also have. Every journal record goes into `pending`, written
        together afterwards in one fsync."""
        waiting = []
        for m, mine in ended:
            files = _has_files(mine)
            if files or self.recorder.sets_aside(m.name) or lane_index(m.name) is not None:
                waiting.append((m, mine, files))
            else:
                await record(m, mine)

        async def side_by_side(m: Member, mine: WorkflowState, files: bool) -> None:
            async with self.download_slots if files else contextlib.nullcontext():
                await record(m, mine)
        await asyncio.gather(*(side_by_side(*each) for each in waiting))

    def _source_outputs(self, refs: Sequence[Ref], workflow_id: str | None
                        ) -> dict[str, Any]:
        """The recorded outputs of a fused member's sources: those that succeeded in
        this run, or were recorded from this same workflow by an earlier, interrupted
        settling of it (never an older result of another workflow)."""
        out: dict[str, Any] = {}
        for ref in refs:
            name = self.alias.get(ref.source, ref.source)
            done = self.recorder.result.results.get(name)
            entry = self.recorder.entries.get(name)
            here = done is not None and done.status == "succeeded"
            earlier = done is None and entry is not None and workflow_id is not None \
                and entry.workflow_id == workflow_id
            if (here or earlier) and name in self.recorder.priors:
                out[ref.source] = self.recorder.priors[name].output
        return out

    def _realize(self, step: str, index: int, source: str) -> Instance | None:
        """A fused foreach member as the foreach names and renders it once its source's
        images are known (the source recorded just before, in the same workflow)."""
        spec_step = self.spec.steps.get(step)
        upstream = self.checked.graph.upstream(step) if spec_step is not None else ()
        prior = self.recorder.priors.get(self.alias.get(source, source))
        if spec_step is None or len(upstream) != 1 or prior is None:
            return None
        context = Context(self.spec, self.journal.run_id)
        context.learn(upstream[0], StepResults((prior.output,), names=(source,)))
        try:
            found = resolve_step(self.checked, spec_step, context, self.policy.seed)
        except PipelineInvalid:
            return None
        return found[index] if index < len(found) and not found[index].fanout else None

    async def follow(self, name: str, state: WorkflowState, limit: float, *,
                     on_update: Callable[[WorkflowState], Awaitable[None]] | None = None
                     ) -> WorkflowState:
        """Long-poll until terminal; past `limit` seconds cancel the workflow (it failed;
        the steps that had already succeeded are still collected)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        if not state.is_terminal and state.id is None:
            # Nothing to follow; the intent stays unsettled, so the next run re-sends the
            # same externalId and gets the workflow back instead of paying again.
            raise ApiProtocolError("the API accepted a workflow but sent no id for it",
                                   hint="run again: civflow re-attaches by its externalId")
        while not state.is_terminal and state.id is not None:
            workflow_id = state.id
            if on_update is not None:
                await on_update(state)
            left = deadline - loop.time()
            if left <= 0:
                with contextlib.suppress(ApiError):  # it may have finished meanwhile
                    await self.backend.cancel(state.id)
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

    # -- workflows this run did not send ---------------------------------------------------

    async def elsewhere(self, lookup: str) -> dict[str, WorkflowState]:
        """Each member key some clone already submitted for this step (its `set_tag`),
        with the workflow that carries it: a succeeded one before one still running,
        before one that failed. Bounded pages; a malformed answer is ignored."""
        found: dict[str, WorkflowState] = {}
        rank = {"succeeded": 0}
        cursor: str | None = None
        for _ in range(_LOOKUP_PAGES):
            page, cursor = await self.backend.query(tags=[lookup], cursor=cursor)
            for state in page:
                mine = _member_keys(state)
                for key in mine:
                    have = found.get(key)
                    score = rank.get(state.status, 1 if not state.is_terminal else 2)
                    if have is None or score < rank.get(
                            have.status, 1 if not have.is_terminal else 2):
                        found[key] = state
            if not cursor or not page:
                break
        return found

    async def attach(self, members: list[Member], state: WorkflowState
                     ) -> dict[str, Mapping[str, Any] | None]:
        """Record `members` from a workflow another clone submitted (nothing is paid)."""
        out: dict[str, Mapping[str, Any] | None] = {m.name: None for m in members}
        for m in members:
            self.report(Event(m.name, Phase.ATTACHED, status=state.status,
                              workflow_id=state.id))
        async with self.slots:  # following counts against --concurrency, as sending does
            if not state.is_terminal and state.id is not None:
                with contextlib.suppress(ApiNotFound):
                    state = await self.backend.get(state.id, wait=self.options.wait_seconds)
            await self.follow_and_record(members, state, out)
        return out

    async def find_by_key(self, key: str) -> WorkflowState | None:
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


def _member_keys(state: WorkflowState) -> list[str]:
    """The member keys a listed workflow says it carries (untrusted: checked)."""
    meta = state.raw.get("metadata")
    mine = meta.get("civflow") if isinstance(meta, Mapping) else None
    keys = mine.get("keys") if isinstance(mine, Mapping) else None
    if not isinstance(keys, list):
        return [state.external_id] if state.external_id else []
    return [k for k in keys[:1000] if isinstance(k, str) and len(k) <= 128]


def _has_files(state: WorkflowState) -> bool:
    """Whether a member's result names a file to download (in its step's output)."""
    return bool(state.steps) and bool(find_blobs(state.steps[0].output or {}))


def _succeeded(state: WorkflowState) -> bool:
    """Succeeded, and coherent about it (steps that all succeeded)."""
    return state.status == "succeeded" and state.malformed is None


def member_state(state: WorkflowState, name: str, cost: float, *, final: bool = True
                 ) -> WorkflowState | None:
    """One member's view of its workflow: its own step, status and share of the cost,
    so one code path serves a workflow of one and of many. A workflow of one step
    named otherwise (sent by an earlier civflow) is that member's. None while the
    member's step is still running (`final=False`)."""
    if final and state.malformed is not None and len(state.steps) <= 1:
        # A lone step the API contradicts itself about: its words are the reason.
        return WorkflowState.from_json({**state.raw, "cost": {"total": cost}})
    step = next((s for s in state.steps if s.name == name), None)
    if step is None and len(state.steps) == 1:
        step = state.steps[0]
    raw: dict[str, Any] = {**state.raw, "cost": {"total": cost}}
    if step is None:
        if not final:
            return None
        raw.update(status="failed", steps=[{"$type": "", "name": name, "status": "failed",
                                            "jobs": [{"reason": "the API's answer has no "
                                                      "step for this instance"}]}])
        return WorkflowState.from_json(raw)
    status = step.status
    if not final and status != "succeeded":
        return None
    if status not in TERMINAL:  # the workflow ended, this step did not: it failed
        status = "failed"
    if status == "succeeded" and not final and state.malformed is not None:
        return None
    raw.update(status=status, steps=[{**step.raw, "status": status}])
    completed = step.raw.get("completedAt")
    if isinstance(completed, str) and completed:
        raw["completedAt"] = completed
    return WorkflowState.from_json(raw)
