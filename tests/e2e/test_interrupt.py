"""An interrupt stops spending: no submission after Ctrl-C, and civflow returns at once.

Each test runs civflow in a real subprocess against an emulator served from this test
process, so the emulator's counters show what was submitted before and after the signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from civflow import load
from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.runner.lock import acquire_run_lock
from civflow.runner.state import project_root
from tests.e2e.support import SECRET, Project, aim, created, spawn, subprocess_env

# Four steps, each waiting for the one before: a run that goes on after the signal
# submits the next one, which the emulator's counters would show.
CHAIN = """\
version: 1
name: relay
steps:
  a:
    type: echo
    input: {message: "first"}
  b:
    type: echo
    input: {message: "{{ steps.a.output.message }} then b"}
  c:
    type: echo
    input: {message: "{{ steps.b.output.message }} then c"}
  d:
    type: echo
    input: {message: "{{ steps.c.output.message }} then d"}
"""

# A notebook cell: `civflow.run` called while an event loop runs, on a loop that leaves
# SIGINT to Python (a KeyboardInterrupt in the main thread), as ipykernel does.
CELL = """\
import asyncio, sys
import civflow

async def cell():
    civflow.run(civflow.load(sys.argv[1]), yes=True)

loop = asyncio.new_event_loop()
try:
    loop.run_until_complete(cell())
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(130)
print("finished", flush=True)
"""

# Generous against a loaded machine; the promise is about 1 s, measured below.
EXIT_WITHIN = 2.0


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """An echo takes 2 s here, so the chain is mid-way whenever the signal lands."""
    with start_emulator(EmulatorConfig(announce=False, time_scale=4, api_key=SECRET)) as running:
        aim(monkeypatch, running)
        yield running


def _wait_for(predicate: object, what: str, deadline: float = 30.0) -> None:
    assert callable(predicate)
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _interrupt(process: subprocess.Popen[bytes]) -> float:
    """SIGINT, then the seconds until the process ended."""
    began = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    return time.monotonic() - began


def test_ctrl_c_while_waiting_for_the_run_lock_returns_at_once(
        project: Project, served: RunningEmulator) -> None:
    path = project.write("relay", CHAIN)
    spec = load(path).spec
    held = acquire_run_lock(spec, project_root(spec))  # "another run" holds the pipeline
    try:
        process = spawn(project, served, "relay", "--wait", log="wait")
        err = project.root / "wait.err"
        _wait_for(lambda: "waiting for the run in progress" in err.read_text(), "the wait")
        before = created(served)
        took = _interrupt(process)
    finally:
        held.release()
    assert process.returncode == 130, err.read_text()
    assert took < EXIT_WITHIN, f"exited {took:.2f} s after Ctrl-C"
    assert "Traceback" not in err.read_text()
    assert created(served) == before == 0


def test_ctrl_c_during_a_run_submits_nothing_more(
        project: Project, served: RunningEmulator) -> None:
    project.write("relay", CHAIN)
    process = spawn(project, served, "relay", log="run")
    _wait_for(lambda: created(served) >= 1, "the first submission")
    took = _interrupt(process)
    err = (project.root / "run.err").read_text()
    assert process.returncode == 130, err
    assert took < EXIT_WITHIN, f"exited {took:.2f} s after Ctrl-C"
    time.sleep(0.5)  # a run that went on would submit `b` when `a` finishes
    assert created(served) == 1, err
    assert "interrupted" in err and "Traceback" not in err


def test_sigint_to_run_inside_a_running_loop_stops_submitting(
        project: Project, served: RunningEmulator, tmp_path: Path) -> None:
    project.write("relay", CHAIN)
    script = tmp_path / "cell.py"
    script.write_text(CELL, encoding="utf-8")
    with (project.root / "cell.err").open("wb") as err_file:
        process = subprocess.Popen(
            [sys.executable, str(script), "pipelines/relay.yaml"], cwd=project.root,
            env=subprocess_env(served), stdout=subprocess.PIPE, stderr=err_file,
            stdin=subprocess.DEVNULL)
    _wait_for(lambda: created(served) >= 1, "the first submission")
    took = _interrupt(process)
    assert process.stdout is not None
    with process.stdout:
        said = process.stdout.read().decode()
    err = (project.root / "cell.err").read_text()
    assert process.returncode == 130 and "KeyboardInterrupt" in said, said + err
    assert took < EXIT_WITHIN, f"returned {took:.2f} s after the interrupt"
    time.sleep(0.5)
    assert created(served) == 1, err
    # What the interrupted run did is in its journal, ready to resume.
    served.set_faults(time_scale=0)
    resumed = project.run("relay")
    assert resumed.code == 0, resumed.text
    assert created(served) == 4
