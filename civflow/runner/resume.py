"""What earlier runs of a pipeline left behind, read once per run from their journals.

- the latest run, if it never finished: its finished entries (not yet in the lockfile)
  and its in-flight intents, which the next run settles whatever its `--only`;
- for every (instance, fingerprint) ever submitted: the highest attempt number, and
  whether the last attempt failed (and was blocked by moderation), so a new key is
  chosen without re-reading every journal per instance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from civflow.plan import InFlight
from civflow.store.journal import Journal, find_unfinished_run, pipeline_runs
from civflow.store.lockfile import LockedInstance

__all__ = ["History", "read_history"]

FAILED = frozenset({"failed", "expired", "canceled", "vanished"})


@dataclass(frozen=True)
class History:
    unfinished: Journal | None = None
    recovered: Mapping[str, LockedInstance] = field(default_factory=dict)
    inflight: Mapping[str, InFlight] = field(default_factory=dict)
    intents: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # by instance
    attempts: Mapping[tuple[str, str], int] = field(default_factory=dict)
    # How the last attempt of (instance, fingerprint) ended, when it did not succeed:
    # "failed", "blocked" (by moderation) or "vanished" (the server lost it).
    failed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    # Batches of the unfinished run (their externalId -> member instances, in order):
    # the next run settles each as a unit before it packs anything new.
    batches: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # (instance, fingerprint) whose latest attempt went out in a batch: its key is not an
    # externalId the API knows, so a re-send alone would not get that workflow back.
    batched: frozenset[tuple[str, str]] = frozenset()


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def read_history(runs_root: Path, pipeline: str) -> History:
    attempts: dict[tuple[str, str], int] = {}
    failed: dict[tuple[str, str], str] = {}
    batched: set[tuple[str, str]] = set()
    for journal in reversed(pipeline_runs(runs_root, pipeline)):  # oldest first
        last_fp: dict[str, str] = {}
        for record in journal.records():
            name, event = record.get("instance"), record.get("event")
            if not isinstance(name, str):
                continue
            if event == "intent":
                fp = str(record.get("fingerprint", ""))
                last_fp[name] = fp
                key = (name, fp)
                attempts[key] = max(attempts.get(key, 0), _int(record.get("attempt"), 1))
                failed.pop(key, None)
                if "batch" in record:
                    batched.add(key)
                else:
                    batched.discard(key)
            elif event in ("finished", "settled") and (name in last_fp or "attempt" in record):
                # A fused instance's result names its own fingerprint and attempt (its
                # intent could only name the request with its inputs still unknown).
                own = record.get("fingerprint")
                key = (name, own if isinstance(own, str) and "attempt" in record
                       else last_fp.get(name, ""))
                if "attempt" in record:
                    attempts[key] = max(attempts.get(key, 0), _int(record.get("attempt"), 1))
                    batched.add(key)
                status = record.get("status")
                if status in FAILED:
                    failed[key] = ("blocked" if record.get("blocked") is True else
                                   "vanished" if status == "vanished" else "failed")
                else:
                    failed.pop(key, None)
    unfinished = find_unfinished_run(runs_root, pipeline)
    if unfinished is None:
        return History(attempts=attempts, failed=failed, batched=frozenset(batched))
    recovered: dict[str, LockedInstance] = {}
    inflight: dict[str, InFlight] = {}
    intents: dict[str, Mapping[str, Any]] = {}
    batches: dict[str, list[str]] = {}
    for record in unfinished.records():
        name, event = record.get("instance"), record.get("event")
        if not isinstance(name, str):
            continue
        if event == "intent":
            intents[name] = record
            batch = record.get("batch")
            if isinstance(batch, str) and name not in batches.setdefault(batch, []):
                batches[batch].append(name)
            inflight[name] = InFlight(
                instance=name, fingerprint=str(record.get("fingerprint", "")),
                attempt=_int(record.get("attempt"), 1),
                seed=record.get("seed") if isinstance(record.get("seed"), int) else None,
                reroll=_int(record.get("reroll")))
        elif event == "submitted" and name in inflight:
            workflow_id = record.get("workflowId")
            if isinstance(workflow_id, str):
                old = inflight[name]
                inflight[name] = InFlight(old.instance, old.fingerprint, old.attempt,
                                          workflow_id, old.seed, old.reroll)
        elif event in ("finished", "settled"):
            inflight.pop(name, None)
            entry = record.get("entry")
            if record.get("status") == "succeeded" and isinstance(entry, Mapping):
                with contextlib.suppress(ValueError):  # a malformed entry is not recovered
                    recovered[name] = LockedInstance.from_dict(entry)
    # A batch is settled once none of its members is in flight any more (a member
    # submitted again alone, in a later intent, is no longer the batch's).
    open_batches = {key: tuple(members) for key, members in batches.items()
                    if any(n in inflight and intents[n].get("batch") == key for n in members)}
    return History(unfinished, recovered, inflight, intents, attempts, failed, open_batches,
                   frozenset(batched))
