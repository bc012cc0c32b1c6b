"""The run's progress on a log: every line, in order, written in few writes.

`LineLog` is what `civflow run` shows when stderr is not a terminal (CI, a file). It
is driven here with real `Event`s, inside and outside an event loop, onto a stream
that counts its writes.
"""

from __future__ import annotations

import asyncio
import io

from civflow.cli.progress import LineLog
from civflow.runner.events import Event, Phase


class Counted(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def _events(n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        out += [Event(f"a[i={i}]", Phase.SUBMITTED, workflow_id=f"w{i}"),
                Event(f"a[i={i}]", Phase.RUNNING, status="processing"),
                Event(f"a[i={i}]", Phase.SUCCEEDED, workflow_id=f"w{i}", cost=2.0)]
    return out


def _shown(text: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in text.splitlines()]


def test_a_burst_in_a_run_is_one_write_with_every_line_in_order() -> None:
    stream = Counted()
    log = LineLog(stream)

    async def run() -> None:
        for event in _events(500):
            log(event)
        assert stream.writes == 0  # waiting for the rest of the burst
        await asyncio.sleep(LineLog.EVERY * 2)  # the loop comes back to it

    asyncio.run(run())
    lines = _shown(stream.getvalue())
    assert stream.writes == 1
    assert len(lines) == 1000  # RUNNING is not a line of its own
    assert lines[0] == "a[i=0]: submitted workflow w0"
    assert lines[1] == "a[i=0]: succeeded workflow w0 2 Buzz"
    assert lines[-1] == "a[i=499]: succeeded workflow w499 2 Buzz"


def test_close_writes_what_waits_even_when_the_loop_ended_first() -> None:
    """A run that ends (or fails) before the next write still has all its lines."""
    stream = Counted()
    log = LineLog(stream)

    async def run() -> None:
        log(Event("a", Phase.SUBMITTED, workflow_id="w1"))
        log(Event("a", Phase.FAILED, status="failed", detail="moderated", workflow_id="w1"))
        log(Event("b", Phase.CACHED))

    asyncio.run(run())
    assert stream.getvalue() == ""
    log.close()
    log.close()  # once only
    lines = stream.getvalue().splitlines()
    assert _shown("\n".join(lines[:2])) == ["a: submitted workflow w1",
                                            "a: failed workflow w1 (moderated)"]
    assert lines[2:] == ["1 instance(s) cached: unchanged, nothing submitted "
                         "(-v lists them)"]


def test_outside_a_loop_each_line_is_written_at_once() -> None:
    stream = Counted()
    log = LineLog(stream)
    log(Event("a", Phase.SUCCEEDED, workflow_id="w1", cost=1.0))
    assert _shown(stream.getvalue()) == ["a: succeeded workflow w1 1 Buzz"]


def test_flush_keeps_the_order_with_what_is_written_beside_it() -> None:
    stream = Counted()
    log = LineLog(stream)

    async def run() -> None:
        log(Event("a", Phase.SUBMITTED, workflow_id="w1"))
        log.flush()
        stream.write("waiting for the run in progress (pid 1) to end\n")
        log(Event("a", Phase.SUCCEEDED, workflow_id="w1"))
        log.flush()

    asyncio.run(run())
    text = stream.getvalue().splitlines()
    assert "submitted" in text[0] and "waiting" in text[1] and "succeeded" in text[2]
