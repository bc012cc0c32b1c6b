"""Lockfile checkpoints while a run goes on: what finished is in the lockfile before the
run ends, not only in its journal (checkpoints are spaced by their own cost, at least a
second apart; see `civflow.runner.recording`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.e2e.support import SECRET, Project, aim, spawn

PAIR = """\
version: 1
name: pair
steps:
  a:
    type: echo
    matrix: {i: [1, 2, 3]}
    input: {message: "a {{ matrix.i }}"}
  b:
    type: echo
    needs: [a]
    input: {message: "b"}
"""


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """An echo takes 2 s here: `b` is still running well after `a`'s checkpoint."""
    with start_emulator(EmulatorConfig(announce=False, time_scale=4, api_key=SECRET)) as running:
        aim(monkeypatch, running)
        yield running


def _locked(project: Project) -> set[str]:
    try:
        return set(json.loads(project.lock_path("pair").read_text(encoding="utf-8"))
                   ["instances"])
    except (OSError, ValueError, KeyError):
        return set()


def test_what_finished_is_checkpointed_while_the_run_goes_on(
        project: Project, served: RunningEmulator) -> None:
    project.write("pair", PAIR)
    process = spawn(project, served, "pair")
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and process.poll() is None:
            if {"a[i=1]", "a[i=2]", "a[i=3]"} <= _locked(project):
                break
            time.sleep(0.05)
        running = process.poll() is None
        assert running, (project.root / "run.err").read_text()
        assert "b" not in _locked(project)  # checkpointed mid-run, before b finished
    finally:
        assert process.wait(timeout=60) == 0, (project.root / "run.err").read_text()
    assert {"a[i=1]", "a[i=2]", "a[i=3]", "b"} <= _locked(project)
