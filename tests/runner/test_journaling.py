"""The run's journal written from the event loop: bursts coalesce, every promise holds.

A real `Journal` in a temporary folder, driven by `JournalWriter` inside a real loop.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from civflow.errors import FileAccessError
from civflow.runner.journaling import JournalWriter
from civflow.store.journal import Journal


def _journal(tmp_path: Path) -> Journal:
    return Journal.create(tmp_path / "runs", "p")


def test_a_burst_is_durable_in_order_when_each_caller_returns(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    writer = JournalWriter(journal)
    seen_on_return: dict[int, int] = {}

    async def one(i: int) -> None:
        await writer.append_many([{"event": "intent", "instance": f"w{i}-m{j}"}
                                  for j in range(3)])
        # Returned: its records are in the file, as a fresh reader sees them.
        names = [r.get("instance") for r in Journal.open(journal.run_dir).records()]
        seen_on_return[i] = sum(n is not None and n.startswith(f"w{i}-") for n in names)

    async def burst() -> None:
        await asyncio.gather(*(one(i) for i in range(50)))

    asyncio.run(burst())
    assert seen_on_return == {i: 3 for i in range(50)}
    names = [r["instance"] for r in journal.records()]
    assert len(names) == 150
    for i in range(50):  # each caller's records stay together and in its order
        at = names.index(f"w{i}-m0")
        assert names[at:at + 3] == [f"w{i}-m0", f"w{i}-m1", f"w{i}-m2"]


def test_a_failed_write_is_every_callers_error(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    writer = JournalWriter(journal)
    journal.path.mkdir()  # the journal file cannot be opened for appending

    async def burst() -> list[BaseException | None]:
        return await asyncio.gather(
            *(writer.append({"event": "intent", "instance": f"w{i}"}) for i in range(5)),
            return_exceptions=True)

    errors = asyncio.run(burst())
    assert all(isinstance(e, FileAccessError) for e in errors), errors


def test_a_cancelled_caller_leaves_the_others_written(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    writer = JournalWriter(journal)

    async def main() -> None:
        first = asyncio.create_task(writer.append({"event": "intent", "instance": "a"}))
        second = asyncio.create_task(writer.append({"event": "intent", "instance": "b"}))
        await asyncio.sleep(0)
        first.cancel()
        await second
        with pytest.raises(asyncio.CancelledError):
            await first
        await writer.append({"event": "intent", "instance": "c"})

    asyncio.run(main())
    names = [r["instance"] for r in journal.records()]
    assert "b" in names and names[-1] == "c"


def test_a_record_without_an_event_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    writer = JournalWriter(journal)
    with pytest.raises(ValueError, match="needs an 'event'"):
        asyncio.run(writer.append_many([{"event": "intent"}, {"instance": "x"}]))
    assert not journal.path.exists() or os.path.getsize(journal.path) == 0
