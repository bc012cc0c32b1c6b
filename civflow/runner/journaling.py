"""The run's journal as the event loop writes it: one write and fsync for each burst.

When a layer's fifty workflows journal their intents at once, each waiting on its own
worker thread (`asyncio.to_thread`) filled the loop's small thread pool with callers
blocked in the journal's group commit, and the first POST waited behind them. Here the
records handed in while a write is under way wait on the loop, and go out together in
the next write, on one thread: the journal (`civflow.store.journal`) stays the only
thing that touches the file, and its promise is kept: a caller returns once its own
records are on disk, and gets the error if that write failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from civflow.store.journal import Journal

__all__ = ["JournalWriter"]


class JournalWriter:
    """Appends records to `journal` from the event loop, coalescing concurrent ones.

    A caller that finds the journal idle writes its own records (one thread hop, as a
    plain `to_thread` would: a chain of single steps pays nothing for this). Callers
    that arrive while a write is under way wait on the loop; when it ends, one task
    writes everything they handed in, in one write, and so on while more arrive."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._busy = False  # a write is under way (a caller's, or the queue's task)
        self._records: list[Mapping[str, Any]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._queue: asyncio.Task[None] | None = None

    @property
    def run_id(self) -> str:
        return self.journal.run_id

    async def append(self, record: Mapping[str, Any]) -> None:
        await self.append_many([record])

    async def append_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Return once `records` are written and fsync'd. Cancelling the caller does not
        take them back: they may still be written (as a thread's write always was)."""
        records = list(records)
        if not records:
            return
        for record in records:  # the journal's own check, in the caller's words
            if "event" not in record:
                raise ValueError("a journal record needs an 'event'")
        if self._busy:
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._records.extend(records)
            self._waiters.append(done)
            await done
            return
        self._busy = True
        try:
            await asyncio.to_thread(self.journal.append_many, records)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """A write ended: what arrived meanwhile goes out next, from a task of its own."""
        if self._records:
            self._queue = asyncio.get_running_loop().create_task(
                self._drain(), name="civflow-journal")
        else:
            self._busy = False

    async def _drain(self) -> None:
        try:
            while self._records:
                records, self._records = self._records, []
                waiters, self._waiters = self._waiters, []
                try:
                    await asyncio.to_thread(self.journal.append_many, records)
                except asyncio.CancelledError:
                    for waiter in waiters:  # the write may still land; nobody waits on it
                        waiter.cancel()
                    raise
                except BaseException as exc:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(None)
        finally:
            self._busy = False
            self._queue = None
            for waiter in self._waiters:  # handed in after the writer was cancelled
                waiter.cancel()
            self._records, self._waiters = [], []
