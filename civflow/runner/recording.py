"""What a run records: results, lock entries, checkpoints, pruning; cached files restored.

One `Recorder` per run holds the lockfile's entries as the run changes them, each
instance's planning view (`priors`) and the run's result table. Every outcome of an
instance, whether submitted, re-attached after a crash or found in another clone's
workflow, is written here the same way: the journal first (fsync'd), then the lockfile
at the next checkpoint. Journal and lockfile writes run in worker threads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from civflow.client.base import WorkflowState
from civflow.errors import UnsafePath
from civflow.expand import Instance
from civflow.loading.model import PipelineSpec
from civflow.names import strip_urls
from civflow.origin import Origin
from civflow.planning import Decision, PlannedInstance, Policy, Prior
from civflow.request import tokenize_output
from civflow.runner.blobs import BlobBook, find_blobs
from civflow.runner.events import Event, Phase, Reporter
from civflow.runner.journaling import JournalWriter
from civflow.runner.results import InstanceResult, RunResult, Status
from civflow.runner.state import artifact_health, prior_of, stat_cache
from civflow.store.archive import EntryArchive
from civflow.store.integrity import relocated
from civflow.store.lockfile import Artifact, LockedInstance, Lockfile, plain
from civflow.store.objects import ObjectStore

__all__ = ["Halt", "Recorder", "Reuse"]

_FLUSH_EVERY = 1.0  # seconds between lockfile checkpoints, at least
_FLUSH_SHARE = 10  # ... and at least this many times as long as the last one took


class Halt:
    """Whether the run has stopped starting new work (`--fail-fast`, the cap, an error)."""

    def __init__(self, fail_fast: bool) -> None:
        self.fail_fast = fail_fast
        self.stopped = False

    def failure(self) -> None:
        if self.fail_fast:
            self.stopped = True


@dataclass(frozen=True)
class Reuse:
    """What an earlier result does for an instance (see `Recorder.reuse`)."""

    settled: bool  # done without submitting: cached (its output), or failed (None)
    output: Mapping[str, Any] | None = None
    fresh: bool = False  # to be made again under a new key: its earlier files are gone


class Recorder:
    """The run's record: lock entries, planning views, results; see the module doc."""

    def __init__(self, spec: PipelineSpec, *, policy: Policy, journal: JournalWriter,
                 store: ObjectStore, blobs: BlobBook, lock: Lockfile | None, lock_path: Path,
                 archive: EntryArchive, result: RunResult, reporter: Reporter, halt: Halt,
                 out_dir: Path, clock: Callable[[], datetime], dirty: bool) -> None:
        self.spec = spec
        self.origin = policy.origin
        self.journal = journal
        self.store = store
        self.blobs = blobs
        self.lock_path = lock_path
        self.lock_dir = spec.lockfile_path.parent
        self.out = out_dir / spec.name  # this pipeline's results, each in its instance's folder
        self.archive = archive
        self.result = result
        self.report = reporter
        self.halt = halt
        self.clock = clock
        self.entries: dict[str, LockedInstance] = dict(lock.instances) if lock else {}
        self.alternates: dict[str, LockedInstance] = dict(lock.alternates) if lock else {}
        self.priors: dict[str, Prior] = dict(policy.priors)
        self.alternate_priors = policy.alternates
        self.stats = stat_cache(store)
        self.refreshed: set[str] = set()  # steps with an instance made again (lost files)
        # How the instances that did not succeed in this run ended: name -> (its
        # fingerprint, "failed" or "blocked"), for the plan recovery hands on.
        self.endings: dict[str, tuple[str, str]] = {}
        self._dirty = dirty
        self._last_flush = 0.0
        self._flush_cost = 0.0
        self._flush_lock = asyncio.Lock()
        for entry in self.entries.values():
            blobs.learn_artifacts(entry.artifacts)

    # -- outcomes ----------------------------------------------------------------------

    async def succeeded(self, name: str, step: str, type_: str, fp: str,
                        request: Mapping[str, Any], seed: int | None, reroll: int,
                        state: WorkflowState, *, pending: list[dict[str, Any]],
                        event: str = "finished", lane: str | None = None) -> LockedInstance:
        """Fetch every output blob, then record the entry. Its journal record is left in
        `pending` for the caller to write with others in one fsync (and to checkpoint
        the lockfile after: `journal_many`)."""
        output = dict(state.steps[0].output or {}) if state.steps else {}
        artifacts: tuple[Artifact, ...] = ()
        if find_blobs(output):  # (a text or JSON result has no file to fetch)
            self.report(Event(name, Phase.DOWNLOADING, workflow_id=state.id))
            artifacts = await self.blobs.download_all(output, out_dir=self.out,
                                                      instance=name, lock_dir=self.lock_dir,
                                                      cache=self.stats)
        tokenized = tokenize_output(output, {a.blob_id: a.sha256 for a in artifacts})
        entry = LockedInstance(
            instance=name, step=step, type=type_, fingerprint=fp, request=plain(request),
            seed=seed, workflow_id=state.id, cost=state.cost,
            completed_at=_completed_at(state, self.clock), output=strip_urls(tokenized),
            artifacts=artifacts, reroll=reroll, made_by=str(self.origin))
        replaced = self.entries.get(name)
        self.entries[name] = entry
        # An entry the other API made is not an earlier paid result: it is not kept.
        if replaced is not None and replaced.fingerprint != fp and \
                Origin.of_entry(replaced.made_by) is self.origin:
            await asyncio.to_thread(self.archive.put, replaced)
        self.priors[name] = prior_of(entry, self.lock_dir, None)
        record: dict[str, Any] = {
            "event": event, "instance": name, "fingerprint": fp, "status": "succeeded",
            "workflowId": state.id, "cost": state.cost, "entry": entry.to_dict()}
        if lane is not None:  # the journal's name for it until now (`step[#i]`)
            record["lane"] = lane
        self.result.results[name] = InstanceResult(name, step, Status.SUCCEEDED, state.id,
                                                   state.cost, artifacts=artifacts)
        self._dirty = True
        pending.append(record)
        self.report(Event(name, Phase.SUCCEEDED, workflow_id=state.id, cost=state.cost))
        return entry

    def failed(self, name: str, step: str, fp: str, state: WorkflowState, *,
               pending: list[dict[str, Any]], attempt: int | None = None,
               event: str = "finished", lane: str | None = None) -> None:
        """A workflow (or a batch member) that ended without succeeding. Its journal
        record is left in `pending`, as `succeeded` leaves its own."""
        failure = state.failure()
        status = Status(state.status) if state.status in ("expired", "canceled") \
            else Status.FAILED
        record: dict[str, Any] = {
            "event": event, "instance": name, "fingerprint": fp, "status": status,
            "workflowId": state.id, "cost": state.cost, "reason": failure.reason,
            "blocked": failure.blocked}
        if attempt is not None:
            record["attempt"] = attempt
        if lane is not None:
            record["lane"] = lane
        self.endings[name] = (fp, "blocked" if failure.blocked else "failed")
        pending.append(record)
        self.result.results[name] = InstanceResult(name, step, status, state.id, state.cost,
                                                   failure.reason)
        self.report(Event(name, Phase.FAILED, status=status, detail=failure.reason,
                          workflow_id=state.id, cost=state.cost))
        self.halt.failure()

    def sets_aside(self, name: str) -> bool:
        """Whether recording `name` may first keep the entry there in the archive (a
        file write, see `succeeded`): an entry is recorded under that name."""
        return name in self.entries

    def refused(self, name: str, step: str, reason: str) -> None:
        """Failed without a workflow: a template on real outputs, a decision of the plan."""
        self.result.results[name] = InstanceResult(name, step, Status.FAILED, reason=reason)
        self.report(Event(name, Phase.FAILED, status="failed", detail=reason))
        self.halt.failure()

    def skipped(self, name: str, step: str, reason: str,
                status: Status = Status.SKIPPED) -> None:
        self.result.results[name] = InstanceResult(name, step, status, reason=reason)
        self.report(Event(name, Phase.SKIPPED, detail=reason))

    # -- results paid for before --------------------------------------------------------

    async def reuse(self, inst: Instance, planned: PlannedInstance) -> Reuse:
        """The one rule for an instance paid for before.

        Cached: its files are made whole in this run's out/ from wherever they are (the
        store, the team's remote, Civitai by blob id), and it is done. Should that fail
        after all (a copy vanished since the plan), the instance fails and nothing is
        submitted: making it again is work this plan did not price or ask for, and the
        next `civflow run` plans it as lost. Lost (the plan found no copy anywhere): it
        runs again under a new key, priced, capped and consented like new work.
        """
        if planned.decision is Decision.LOST:
            self.refreshed.add(inst.step)
            return Reuse(settled=False, fresh=True)
        if planned.decision is not Decision.CACHED:
            return Reuse(settled=False)
        entry, prior = await self._current(inst)
        if prior.artifacts_ok or await self._repair(entry):
            self.result.results[inst.name] = InstanceResult(
                inst.name, inst.step, Status.CACHED, entry.workflow_id, entry.cost,
                artifacts=entry.artifacts)
            self.report(Event(inst.name, Phase.CACHED))
            return Reuse(settled=True, output=prior.output)
        self.refused(inst.name, inst.step,
                     "its files could not be restored (not in out/, the store, the remote, "
                     "nor at Civitai any more); nothing was submitted, and the next "
                     "`civflow run` plans making it again, priced")
        return Reuse(settled=True)

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
                    # Going back is cached: the replaced entry stays findable by its
                    # fingerprint on this machine (not in the committed lockfile).
                    await asyncio.to_thread(self.archive.put, before)
                self.priors[inst.name] = self.alternate_priors[fp]
                self._dirty = True
        assert entry is not None, "the plan decides cached only with an entry"
        # Files recorded outside this run's out/ (an earlier --out, a hand-edited path)
        # are restored into it, and the entry says where they are now.
        moved = relocated(entry, self.lock_dir, self.out)
        if moved is not entry:
            entry = self.entries[inst.name] = moved
            self._dirty = True
        return entry, self.priors[inst.name]

    async def _repair(self, entry: LockedInstance) -> bool:
        """Bring back an instance's missing or modified files from the store, or by blob
        id; True when all are whole again. Nothing is submitted, nothing is charged."""
        self.report(Event(entry.instance, Phase.DOWNLOADING, detail="restoring files"))
        health = artifact_health(entry, self.lock_dir, self.store, self.stats)
        try:
            done = await self.blobs.repair(health.statuses, lock_dir=self.lock_dir,
                                           out_dir=self.out,
                                           cache=self.stats)
        except UnsafePath:
            return False  # recorded outside this run's out/ (an earlier --out): run again
        if all(status.ok for status in done):
            return True
        reasons = "; ".join(s.detail for s in done if not s.ok and s.detail)
        self.report(Event(entry.instance, Phase.WAITING, detail=reasons or None))
        return False

    # -- the lockfile ----------------------------------------------------------------

    async def journal_many(self, records: list[dict[str, Any]]) -> None:
        """Records kept back for one fsync (`pending`), then a checkpoint."""
        if records:
            await self.journal.append_many(records)
            await self.flush()

    async def flush(self, *, force: bool = False) -> None:
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

    def prune(self, complete: Mapping[str, frozenset[str]]) -> None:
        """A full run forgets instances the pipeline no longer has: those of removed steps,
        and those a step that completed in this run no longer produces (a foreach item
        gone, a matrix value changed). A step that failed or was skipped keeps its
        entries (the caller skips pruning for --only and --keep-stale)."""
        for name in list(self.entries):
            step = name.split("[", 1)[0]
            if step not in self.spec.steps or \
                    (step in complete and name not in complete[step]):
                del self.entries[name]
                self._dirty = True

    async def finish(self) -> None:
        await self.flush(force=True)
        await asyncio.to_thread(self.stats.save)


def _completed_at(state: WorkflowState, clock: Callable[[], datetime]) -> str:
    value = state.raw.get("completedAt")
    if isinstance(value, str) and value:
        return value
    return clock().isoformat().replace("+00:00", "Z")
