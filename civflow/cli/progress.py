"""Show a run as it goes: a live table on a terminal, one line per event otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from civflow.names import shown
from civflow.runner.events import Event, Phase

_STYLE = {Phase.CACHED: "dim", Phase.SKIPPED: "yellow", Phase.SUCCEEDED: "green",
          Phase.FAILED: "bold red", Phase.RUNNING: "cyan", Phase.SUBMITTED: "cyan",
          Phase.ATTACHED: "cyan", Phase.DOWNLOADING: "blue", Phase.WAITING: "white"}


@dataclass
class _Row:
    phase: Phase
    status: str | None = None
    cost: float | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    note: str = ""


class LineLog:
    """One line per meaningful event, for logs and CI. Cached instances are one summary
    line at the end (each on its own line with `verbose`): a 3-instance change to a
    200-instance sweep reads as 3 lines, not 200.

    Inside a running event loop, lines are written together at most `EVERY` seconds
    after the first of them: a batch of 1,000 members ending at once is one write, not
    1,000 (a fifth of a large run's client time went to them). `flush` and `close`
    write what waits at once."""

    EVERY = 0.2  # seconds a line may wait for others

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.verbose = verbose
        self.cached = 0
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def __call__(self, event: Event) -> None:
        if event.phase in (Phase.RUNNING, Phase.DOWNLOADING) or \
                (event.phase is Phase.WAITING and not event.detail):
            return
        if event.phase is Phase.CACHED and not self.verbose:
            self.cached += 1
            return
        parts = [f"[{time.monotonic() - self.start:7.1f}s]", f"{shown(event.instance)}:",
                 event.phase.value]
        if event.workflow_id:
            parts.append(f"workflow {event.workflow_id}")
        if event.cost:
            parts.append(f"{event.cost:g} Buzz")
        if event.detail:
            parts.append(f"({shown(event.detail)})")
        self._lines.append(" ".join(parts))
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.EVERY, self.flush)
            except RuntimeError:  # no loop to come back: now
                self.flush()

    def flush(self) -> None:
        """Write the lines waiting, in order."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._lines:
            lines, self._lines = self._lines, []
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def close(self) -> None:
        self.flush()
        if self.cached and not self._closed:
            print(f"{self.cached} instance(s) cached: unchanged, nothing submitted "
                  "(-v lists them)", file=self.stream, flush=True)
        self._closed = True


class LiveTable:
    """A rich table of every instance: state, queue position or progress, cost, time."""

    def __init__(self, *, verbose: bool = False) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.verbose = verbose
        self.cached = 0  # not shown row by row unless verbose
        self.rows: dict[str, _Row] = {}
        # The table is built when rich refreshes it (8 times a second), never per event:
        # per event, a run of n instances built n tables of up to n rows.
        self.live = Live(console=self.console, refresh_per_second=8, transient=False,
                         get_renderable=self._table)
        self.live.start()
        self._closed = False

    def __call__(self, event: Event) -> None:
        if event.phase is Phase.CACHED and not self.verbose:
            self.cached += 1
            return
        row = self.rows.get(event.instance)
        if row is None:
            row = self.rows[event.instance] = _Row(event.phase)
        row.phase = event.phase
        row.status = event.status or row.status
        row.cost = event.cost if event.cost is not None else row.cost
        if event.queue_position is not None:
            row.note = f"queue #{event.queue_position}"
        elif event.progress is not None:
            row.note = f"{event.progress:.0%}"
        elif event.detail:
            row.note = event.detail
        if event.phase.final:
            row.ended = time.monotonic()

    def _table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("instance", "state", "", "Buzz", "time"):
            table.add_column(column)
        spent = 0.0
        for name, row in tuple(self.rows.items()):  # rich's refresh thread reads them
            spent += row.cost or 0.0
            elapsed = (row.ended or time.monotonic()) - row.started
            state = row.status if row.phase in (Phase.RUNNING, Phase.SUBMITTED) and \
                row.status else row.phase.value
            # Names and notes are text, never rich markup: a matrix value may hold '['.
            table.add_row(Text(shown(name)), Text(state, style=_STYLE.get(row.phase, "white")),
                          Text(shown(row.note)),
                          f"{row.cost:g}" if row.cost else "",
                          "" if row.phase in (Phase.CACHED, Phase.SKIPPED) else f"{elapsed:.1f}s")
        cached = f" · {self.cached} cached (-v lists them)" if self.cached else ""
        table.caption = f"{spent:g} Buzz so far{cached}"
        return table

    def flush(self) -> None:
        """Nothing waits: the table shows each event at its next refresh."""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.live.refresh()
            self.live.stop()


def reporter_for(stream: TextIO, *, verbose: bool = False) -> LineLog | LiveTable:
    return LiveTable(verbose=verbose) if stream.isatty() else LineLog(stream, verbose=verbose)
