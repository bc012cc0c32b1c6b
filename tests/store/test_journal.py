"""The run journal: durable appends, torn lines ignored, run discovery and the state fold."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from civflow.errors import FileAccessError
from civflow.store.journal import (
    Journal,
    RunState,
    external_id,
    find_unfinished_run,
    new_run_id,
)


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def test_external_id_is_valid_and_deterministic() -> None:
    key = external_id("f" * 64, 1)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,128}", key)
    assert key == external_id("f" * 64, 1)
    assert key != external_id("f" * 64, 2) != external_id("e" * 64, 2)
    with pytest.raises(ValueError):
        external_id("f", 0)


def test_run_ids_sort_by_time() -> None:
    early = new_run_id(datetime(2025, 1, 1, tzinfo=UTC), "ffffff")
    late = new_run_id(datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "000000")
    assert early == "20250101T000000.000000Z-ffffff"
    assert early < late


def test_append_and_read_back(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "hero-shot", clock=_Clock(), suffix="aaaaaa")
    journal.append({"event": "run-started", "pipeline": "p.yaml", "argv": ["run"]})
    journal.append({"event": "intent", "instance": "hero", "fingerprint": "fp",
                    "externalId": "cf-x-1", "attempt": 1})
    again = Journal.open(journal.run_dir)
    assert again.pipeline == "hero-shot" and again.run_id == journal.run_id
    records = again.records()
    assert [r["event"] for r in records] == ["run-started", "intent"]
    assert records[1]["at"].endswith("Z")
    assert (journal.run_dir / "journal.jsonl").read_text().count("\n") == 2


def test_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "p")
    journal.append({"event": "run-started"})
    with open(journal.path, "ab") as handle:
        handle.write(b'{"event": "intent", "instan')  # kill -9 in the middle of a write
    assert [r["event"] for r in journal.records()] == ["run-started"]
    reopened = Journal.open(journal.run_dir)
    reopened.append({"event": "run-resumed"})
    assert [r["event"] for r in reopened.records()] == ["run-started", "run-resumed"]


def test_a_torn_first_line_means_no_records(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "p")
    journal.path.write_bytes(b'{"event": "run-st')
    assert journal.records() == []


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "p")
    journal.path.write_bytes(b'{"event": "a"}\nnot json\n{"event": "b"}\n')
    with pytest.raises(FileAccessError, match="line 2"):
        journal.records()


def test_state_fold() -> None:
    state = RunState.fold([
        {"event": "run-started"},
        {"event": "intent", "instance": "a", "fingerprint": "fa", "externalId": "k1",
         "attempt": 1},
        {"event": "submitted", "instance": "a", "workflowId": "w1"},
        {"event": "finished", "instance": "a", "status": "failed", "cost": 3, "blocked": True},
        {"event": "intent", "instance": "b", "fingerprint": "fb", "externalId": "k2",
         "attempt": 1},
        {"event": "intent", "instance": "a", "fingerprint": "fa", "externalId": "k3",
         "attempt": 2},
    ])
    a, b = state.get("a"), state.get("b")
    assert a is not None and b is not None
    assert (a.attempt, a.external_id, a.workflow_id, a.finished_status) == (2, "k3", None, None)
    assert (b.workflow_id, b.finished_status) == (None, None)
    assert not state.finished
    assert state.get("zzz") is None


def test_find_unfinished_run_and_attempts_across_runs(tmp_path: Path) -> None:
    clock = _Clock()
    assert find_unfinished_run(tmp_path, "p") is None
    first = Journal.create(tmp_path, "p", clock=clock)
    first.append({"event": "intent", "instance": "a", "fingerprint": "fa",
                  "externalId": "k", "attempt": 3})
    Journal.create(tmp_path, "other", clock=clock).append({"event": "run-started"})
    found = find_unfinished_run(tmp_path, "p")
    assert found is not None and found.run_id == first.run_id
    first.append({"event": "run-finished", "status": "failed"})
    assert find_unfinished_run(tmp_path, "p") is None
    second = Journal.create(tmp_path, "p", clock=clock)
    assert second.highest_attempt("a", "fa") == 3
    assert second.highest_attempt("a", "other-fingerprint") == 0
    found = find_unfinished_run(tmp_path, "p")
    assert found is not None and found.run_id == second.run_id


_APPENDER = """
import sys
from pathlib import Path
from civflow.store.journal import Journal
journal = Journal.open(Path(sys.argv[1]))
n = 0
while True:
    journal.append({"event": "intent", "instance": f"i{n}", "pad": "x" * 5000, "n": n})
    if n == 0:
        print("started", flush=True)
    n += 1
"""


def test_sigkill_during_appends_leaves_only_whole_records(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "p")
    repo = Path(__file__).resolve().parents[2]
    with subprocess.Popen([sys.executable, "-c", _APPENDER, str(journal.run_dir)],
                          stdout=subprocess.PIPE, cwd=repo,
                          env={**os.environ, "PYTHONPATH": str(repo)}) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"started"
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    records = journal.records()
    assert records and [r["n"] for r in records] == list(range(len(records)))
    journal.append({"event": "run-resumed"})
    assert journal.records()[-1]["event"] == "run-resumed"
    assert len(journal.records()) == len(records) + 1


def test_concurrent_appends_share_fsyncs_and_each_returns_on_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal.create(tmp_path, "p")
    journal.append({"event": "run-started"})
    real_fsync, synced = os.fsync, []
    gate = threading.Event()

    def slow_fsync(fd: int) -> None:  # a disk that takes its time, as real ones do
        gate.wait(timeout=5)
        real_fsync(fd)
        synced.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    returned: dict[int, int] = {}  # writer -> bytes fsync'd when its append returned

    def writer(n: int) -> None:
        journal.append_many([{"event": "intent", "n": n, "member": m} for m in range(3)])
        returned[n] = synced[-1]

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    gate.set()  # the first write was held up while the others queued behind it
    for thread in threads:
        thread.join(timeout=10)
    records = journal.records()
    assert len(records) == 1 + 40 * 3
    assert len(synced) < 40  # grouped: fewer fsyncs than appends
    for n in range(40):  # each caller's records were in the file it saw fsync'd
        lines = journal.path.read_bytes()[:returned[n]].decode().splitlines()
        assert sum(json.loads(line).get("n") == n for line in lines) == 3


def test_a_failed_write_fails_every_append_in_it(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal.create(tmp_path, "p")
    journal.append({"event": "run-started"})
    gate = threading.Event()

    def failing_fsync(_fd: int) -> None:
        gate.wait(timeout=5)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            journal.append({"event": "intent", "n": n})
        except FileAccessError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    gate.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(errors) == 8 and all("Input/output error" in str(e) for e in errors)
    monkeypatch.undo()
    journal.append({"event": "run-resumed"})  # a later write that works is not refused
    assert journal.records()[-1]["event"] == "run-resumed"
