"""Show a run as it goes: a live table on a terminal, one line per event otherwise."""

from __future__ import annotations

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
    200-instance sweep reads as 3 lines, not 200."""

    def __init__(self, stream: TextIO | None = None, *, verbose: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.verbose = verbose
        self.cached = 0

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
        print(" ".join(parts), file=self.stream, flush=True)

    def close(self) -> None:
        if self.cached:
            print(f"{self.cached} instance(s) cached: unchanged, nothing submitted "
                  "(-v lists them)", file=self.stream, flush=True)


class LiveTable:
    """A rich table of every instance: state, queue position or progress, cost, time."""

    def __init__(self, *, verbose: bool = False) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.verbose = verbose
        self.cached = 0  # not shown row by row unless verbose
        self.rows: dict[str, _Row] = {}
        self.live = Live(self._table(), console=self.console, refresh_per_second=8,
                         transient=False)
        self.live.start()

    def __call__(self, event: Event) -> None:
        if event.phase is Phase.CACHED and not self.verbose:
            self.cached += 1
            self.live.update(self._table())
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
        self.live.update(self._table())

    def _table(self) -> Any:
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, pad_edge=False, show_edge=False)
        for column in ("instance", "state", "", "Buzz", "time"):
            table.add_column(column)
        spent = 0.0
        for name, row in self.rows.items():
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

    def close(self) -> None:
        self.live.update(self._table())
        self.live.stop()


def reporter_for(stream: TextIO, *, verbose: bool = False) -> LineLog | LiveTable:
    return LiveTable(verbose=verbose) if stream.isatty() else LineLog(stream, verbose=verbose)
