"""What earlier runs of a pipeline left behind, read once per run from their journals.

- the latest run, if it never finished: its finished entries (not yet in the lockfile)
  and its in-flight intents, which the next run settles whatever its `--only`;
- for every (instance, fingerprint) ever submitted: the highest attempt number, and
  whether the last attempt failed (and was blocked by moderation), so a new key is
  chosen without re-reading every journal per instance.

The second part is a fold over every journal the pipeline ever wrote, which grows with
each run; so its value over all journals but the newest is kept in a digest beside them
(`.history-<hash>.json`), with the size of each journal it covers. The next run folds
only what is new; a digest that does not match the journals on disk (a journal grew,
went away or was added in between, the file is damaged) is ignored and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from civflow.errors import FileAccessError
from civflow.planning import InFlight
from civflow.store.atomic import atomic_write_text
from civflow.store.journal import Journal, RunState, pipeline_runs
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
    # Fused foreach members of the unfinished run recorded under the name their item
    # gave them: lane name (`step[#i]`) -> that name.
    lanes: Mapping[str, str] = field(default_factory=dict)


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


Key = tuple[str, str]  # (instance, fingerprint)


@dataclass
class _Attempts:
    """The fold of journals, oldest first: what every (instance, fingerprint) got."""

    attempts: dict[Key, int] = field(default_factory=dict)
    failed: dict[Key, str] = field(default_factory=dict)

    def add(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Fold one journal's records on top of the older ones'."""
        attempts, failed = self.attempts, self.failed
        last_fp: dict[str, str] = {}
        for record in records:
            name, event = record.get("instance"), record.get("event")
            if not isinstance(name, str):
                continue
            if event == "intent":
                fp = str(record.get("fingerprint", ""))
                last_fp[name] = fp
                key = (name, fp)
                attempts[key] = max(attempts.get(key, 0), _int(record.get("attempt"), 1))
                failed.pop(key, None)
            elif event in ("finished", "settled") and (name in last_fp or "attempt" in record):
                # A fused instance's result names its own fingerprint and attempt (its
                # intent could only name the request with its inputs still unknown).
                own = record.get("fingerprint")
                key = (name, own if isinstance(own, str) and "attempt" in record
                       else last_fp.get(name, ""))
                if "attempt" in record:
                    attempts[key] = max(attempts.get(key, 0), _int(record.get("attempt"), 1))
                status = record.get("status")
                if status in FAILED:
                    failed[key] = ("blocked" if record.get("blocked") is True else
                                   "vanished" if status == "vanished" else "failed")
                else:
                    failed.pop(key, None)

    def to_json(self, covered: Sequence[tuple[str, int]]) -> str:
        return json.dumps({
            "version": DIGEST_VERSION, "covers": [list(c) for c in covered],
            "attempts": sorted([n, fp, a] for (n, fp), a in self.attempts.items()),
            "failed": sorted([n, fp, how] for (n, fp), how in self.failed.items())},
            separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Any) -> tuple[_Attempts, list[tuple[str, int]]] | None:
        """The digest's fold and the journals it covers; None for anything malformed."""
        if not isinstance(data, dict) or data.get("version") != DIGEST_VERSION:
            return None
        try:
            covers = [(str(run), int(size)) for run, size in data["covers"]]
            fold = cls({(str(n), str(fp)): int(a) for n, fp, a in data["attempts"]},
                       {(str(n), str(fp)): str(how) for n, fp, how in data["failed"]})
        except (KeyError, TypeError, ValueError):
            return None
        return fold, covers


DIGEST_VERSION = 1


def _digest_path(runs_root: Path, pipeline: str) -> Path:
    # Hashed: a pipeline's name never forms a path.
    return runs_root / f".history-{hashlib.sha256(pipeline.encode()).hexdigest()[:16]}.json"


def _size(journal: Journal) -> int:
    try:
        return journal.path.stat().st_size
    except OSError:
        return -1


def _fold_all(runs_root: Path, pipeline: str,
              oldest_first: Sequence[Journal]) -> tuple[_Attempts, list[Mapping[str, Any]]]:
    """The fold of every journal, and the newest journal's records. Journals the digest
    covers are not read; the digest is brought up to all but the newest journal (which a
    resumed run may still append to)."""
    path = _digest_path(runs_root, pipeline)
    sizes = [(journal.run_id, _size(journal)) for journal in oldest_first]
    fold, covered = _Attempts(), 0
    with contextlib.suppress(OSError, ValueError, RecursionError):
        found = _Attempts.from_json(json.loads(path.read_text(encoding="utf-8")))
        if found is not None and found[1] == sizes[:len(found[1])] \
                and len(found[1]) < len(sizes):
            fold, covered = found[0], len(found[1])
    for journal in oldest_first[covered:-1]:
        fold.add(journal.records())
    if len(oldest_first) - 1 > covered:  # journals to remember besides the newest
        with contextlib.suppress(FileAccessError, OSError):  # e.g. a read-only checkout
            atomic_write_text(path, fold.to_json(sizes[:-1]) + "\n")
    newest = oldest_first[-1].records() if oldest_first else []
    fold.add(newest)
    return fold, newest


def read_history(runs_root: Path, pipeline: str) -> History:
    runs = list(reversed(pipeline_runs(runs_root, pipeline)))  # oldest first
    fold, newest = _fold_all(runs_root, pipeline, runs)
    attempts, failed = fold.attempts, fold.failed
    # Only the latest run can be resumed: once a later run finished, an older
    # interrupted one is history.
    unfinished = runs[-1] if runs and not RunState.fold(newest).finished else None
    if unfinished is None:
        return History(attempts=attempts, failed=failed)
    recovered: dict[str, LockedInstance] = {}
    inflight: dict[str, InFlight] = {}
    intents: dict[str, Mapping[str, Any]] = {}
    batches: dict[str, list[str]] = {}
    lanes: dict[str, str] = {}
    for record in newest:
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
            lane = record.get("lane")
            if isinstance(lane, str) and lane:  # a fused foreach member, named at last
                inflight.pop(lane, None)
                lanes[lane] = name
            entry = record.get("entry")
            if record.get("status") == "succeeded" and isinstance(entry, Mapping):
                with contextlib.suppress(ValueError):  # a malformed entry is not recovered
                    recovered[name] = LockedInstance.from_dict(entry)
    # A batch is settled once none of its members is in flight any more (a member
    # submitted again alone, in a later intent, is no longer the batch's).
    open_batches = {key: tuple(members) for key, members in batches.items()
                    if any(n in inflight and intents[n].get("batch") == key for n in members)}
    return History(unfinished, recovered, inflight, intents, attempts, failed, open_batches,
                   lanes)
