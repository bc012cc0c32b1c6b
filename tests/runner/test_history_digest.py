"""The history digest: what every earlier run submitted, kept so a run reads only the
journals that are new, and always the same answer as reading them all."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from civflow.runner.resume import History, read_history
from civflow.store.journal import Journal

PIPELINE = "poster"


def _clock(start: datetime) -> Callable[[], datetime]:
    moments = iter(start + timedelta(seconds=n) for n in range(1000))
    return lambda: next(moments)


def _run(root: Path, day: int, records: list[dict[str, object]], *,
         finished: bool = True) -> Journal:
    journal = Journal.create(root, PIPELINE, clock=_clock(datetime(2026, 1, day, tzinfo=UTC)))
    journal.append_many([{"event": "run-started", "pipeline": "p.yaml"}, *records])
    if finished:
        journal.append({"event": "run-finished", "status": "succeeded"})
    return journal


def _intent(name: str, fp: str, attempt: int, **more: object) -> dict[str, object]:
    return {"event": "intent", "instance": name, "fingerprint": fp, "attempt": attempt, **more}


def _finished(name: str, status: str, **more: object) -> dict[str, object]:
    return {"event": "finished", "instance": name, "status": status, **more}


def _without_digest(root: Path) -> History:
    for digest in root.glob(".history-*.json"):
        digest.unlink()
    history = read_history(root, PIPELINE)
    for digest in root.glob(".history-*.json"):
        digest.unlink()
    return history


def _same(a: History, b: History) -> None:
    assert (a.attempts, a.failed) == (b.attempts, b.failed)
    assert (a.unfinished and a.unfinished.run_id) == (b.unfinished and b.unfinished.run_id)
    assert (a.inflight, a.batches) == (b.inflight, b.batches)


def test_runs_one_after_another_give_what_reading_every_journal_gives(tmp_path: Path) -> None:
    _run(tmp_path, 1, [_intent("hero", "f1", 1), _finished("hero", "failed")])
    _run(tmp_path, 2, [_intent("hero", "f1", 2), _finished("hero", "succeeded"),
                       _intent("tile[0]", "t0", 1, batch="cfb-x-2"),
                       _finished("tile[0]", "failed", blocked=True)])
    first = read_history(tmp_path, PIPELINE)  # writes the digest (covers day 1)
    assert list(tmp_path.glob(".history-*.json"))
    _same(first, _without_digest(tmp_path))
    assert first.attempts[("hero", "f1")] == 2 and ("hero", "f1") not in first.failed
    assert first.failed[("tile[0]", "t0")] == "blocked"
    _run(tmp_path, 3, [_intent("tile[0]", "t0", 2), _finished("tile[0]", "succeeded")])
    _run(tmp_path, 4, [_intent("hero", "f2", 1)], finished=False)  # killed mid-run
    again = read_history(tmp_path, PIPELINE)
    _same(again, _without_digest(tmp_path))
    assert again.unfinished is not None and "hero" in again.inflight
    assert again.attempts[("tile[0]", "t0")] == 2 and not again.failed


def test_a_digest_that_does_not_match_the_journals_is_rebuilt(tmp_path: Path) -> None:
    old = _run(tmp_path, 1, [_intent("hero", "f1", 1), _finished("hero", "failed")])
    _run(tmp_path, 2, [_intent("hero", "f1", 2)])
    read_history(tmp_path, PIPELINE)
    # A covered journal grows afterwards (a later append to an old run): not trusted.
    old.append_many([_intent("hero", "f1", 7), _finished("hero", "failed")])
    history = read_history(tmp_path, PIPELINE)
    assert history.attempts[("hero", "f1")] == 7
    _same(history, _without_digest(tmp_path))


def test_a_damaged_or_hostile_digest_is_ignored(tmp_path: Path) -> None:
    _run(tmp_path, 1, [_intent("hero", "f1", 3), _finished("hero", "failed")])
    _run(tmp_path, 2, [])
    expected = _without_digest(tmp_path)
    read_history(tmp_path, PIPELINE)
    (digest,) = tmp_path.glob(".history-*.json")
    covers = json.loads(digest.read_text())["covers"]
    for text in ("{", "[]", '{"version": 1}', "[" * 100_000,
                 json.dumps({"version": 1, "covers": covers, "attempts": [["hero"]],
                             "failed": [], "batched": []})):
        digest.write_text(text)
        _same(read_history(tmp_path, PIPELINE), expected)


def test_a_digest_that_cannot_be_written_is_not_needed(tmp_path: Path) -> None:
    _run(tmp_path, 1, [_intent("hero", "f1", 1)])
    _run(tmp_path, 2, [])
    read_history(tmp_path, PIPELINE)
    (digest,) = tmp_path.glob(".history-*.json")
    digest.unlink()
    digest.mkdir()  # neither readable nor replaceable, whoever runs the test
    assert read_history(tmp_path, PIPELINE).attempts[("hero", "f1")] == 1
    assert digest.is_dir()
