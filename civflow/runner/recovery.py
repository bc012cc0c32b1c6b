"""What an interrupted run left in flight, settled before anything new is scheduled.

Every workflow the interrupted run submitted (or was about to), one instance or a
batch alike, is found by its workflow id or its externalId, followed to its end and
each member recorded, whatever this run's `--only`: work paid for before a crash is
never paid for again, and never lost. The result is the plan's `Policy` as it stands
after recovery (new entries, new failures, nothing in flight), handed to the scheduler
once; it does not change after that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from civflow.client.base import WorkflowState
from civflow.errors import ApiNotFound
from civflow.grouping import Ref
from civflow.planning import InFlight, Policy
from civflow.runner.deadlines import DEFAULT_TIMEOUT
from civflow.runner.events import Event, Phase
from civflow.runner.resume import History
from civflow.runner.submission import Member, Submitter

__all__ = ["recover"]


async def recover(policy: Policy, history: History, submitter: Submitter) -> Policy:
    """Settle every workflow of the interrupted run (see the module doc)."""
    inflight = dict(policy.inflight)
    if not inflight:
        return policy
    inflight_before = dict(inflight)
    failed = dict(policy.failed)
    resumed: set[str] = set()
    recorder = submitter.recorder
    for key, names in _workflows(inflight, history).items():
        members = [_member(inflight[n], history.intents.get(n, {})) for n in names]
        workflow_id = next((inflight[n].workflow_id for n in names
                            if inflight[n].workflow_id), None)
        state: WorkflowState | None = None
        try:
            if workflow_id is not None:
                state = await submitter.backend.get(workflow_id,
                                                    wait=submitter.options.wait_seconds)
            else:
                state = await submitter.find_by_key(key)
        except ApiNotFound:
            state = None
        if state is None:
            # Never received (abandoned): its members keep their keys and seeds, so a
            # re-send is recognised if it did arrive after all. Lost by the server
            # (vanished): the next attempt gets a new key.
            status = "vanished" if workflow_id is not None else "abandoned"
            await submitter.journal.append_many([{
                "event": "settled", "instance": m.name, "status": status,
                "fingerprint": m.fp, **({"batch": key} if key != m.key else {})}
                for m in members])
            if status == "vanished":
                for m in members:
                    submitter.report(Event(m.name, Phase.WAITING, detail=(
                        f"workflow {workflow_id} no longer exists on the server; "
                        "submitted again under a new key")))
                    failed[(m.name, m.fp)] = "vanished"
                    del inflight[m.name]
            else:
                for m in members:
                    inflight[m.name] = replace(inflight[m.name], workflow_id=None)
            continue
        for m in members:
            submitter.report(Event(m.name, Phase.ATTACHED, status=state.status,
                                   workflow_id=state.id))
        out: dict[str, Mapping[str, Any] | None] = {}
        state = await submitter.follow_and_record(members, state, out, event="settled",
                                                  limit=DEFAULT_TIMEOUT)
        submitter.budget.settle(0.0, state.cost)  # paid by the interrupted run
        recorder.result.spent = submitter.budget.spent
        for m in members:
            del inflight[m.name]
            name = submitter.alias.get(m.name, m.name)
            if name in recorder.endings:
                fp, ended = recorder.endings[name]
                failed[(name, fp)] = ended
            elif _remade(policy, inflight_before[m.name]) and \
                    recorder.result.results.get(name) is not None:
                resumed.add(name)
    return replace(policy, priors={**policy.priors, **recorder.priors}, inflight=inflight,
                   failed=failed, resumed=frozenset(resumed))


def _remade(policy: Policy, flying: InFlight) -> bool:
    """The interrupted submission re-made what the lockfile already had (a --force,
    a --reroll): the same command run again resumes it instead of paying again. New
    work it was not: a --force now makes that again, as asked."""
    old = policy.priors.get(flying.instance)
    return old is not None and (old.fingerprint == flying.fingerprint
                                or flying.reroll > old.reroll)


def _workflows(inflight: Mapping[str, InFlight], history: History
               ) -> dict[str, list[str]]:
    """The interrupted run's workflows: externalId -> member instances, in order."""
    out: dict[str, list[str]] = {}
    for key, names in history.batches.items():
        members = [n for n in names if n in inflight
                   and history.intents.get(n, {}).get("batch") == key]
        if members:
            out[key] = members
    for name in inflight:
        intent = history.intents.get(name, {})
        if intent.get("batch"):
            continue
        own = intent.get("externalId")
        out.setdefault(own if isinstance(own, str) and own else f"?{name}", []).append(name)
    return out


def _member(flying: InFlight, intent: Mapping[str, Any]) -> Member:
    request = intent.get("request")
    key = intent.get("externalId")
    return Member(flying.instance, str(intent.get("step", "")), str(intent.get("type", "")),
                  flying.fingerprint, flying.attempt, key if isinstance(key, str) else "",
                  request if isinstance(request, Mapping) else None, flying.seed,
                  flying.reroll, refs=_journaled_refs(intent.get("refs")))


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
