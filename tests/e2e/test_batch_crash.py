"""Crash safety with batches: kill -9 at random moments, faults on every request, resume.

The emulator serves from this test process, so its counters outlive every kill; it
counts workflows by externalId and steps by name (civflow names a batch's steps after
their instances), which proves that no instance was ever created or charged twice.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Iterator

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.e2e.support import FAN as FAN_ALONE
from tests.e2e.support import MODEL, SECRET, Project, aim, check_artifacts, spawn, workflows_made

# The crash tests' fan-out, packed four steps to a workflow.
FAN = FAN_ALONE.replace("name: fan\n", "name: fan\nbatch: 4\n")

# A fast image and a batch of slow videos: a crash lands while the batch is in flight.
HERO_AND_CLIPS = f"""\
version: 1
name: pair
batch: 10
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: a lighthouse
      width: 256
      height: 256
      steps: 10
  clip:
    type: videoGen
    matrix:
      take: [1, 2, 3]
    input:
      engine: wan
      version: v2.6
      provider: fal
      cfgScale: 4
      operation: text-to-video
      prompt: "take {{{{ matrix.take }}}} of a waterfall"
      resolution: 720p
      duration: 5
"""


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """Jobs last a few tenths of a second, so a kill lands in every phase of a run."""
    with start_emulator(EmulatorConfig(announce=False, time_scale=0.3, api_key=SECRET,
                                       fault_seed=11)) as running:
        aim(monkeypatch, running)
        yield running


def _wait_for(condition: Callable[[], bool], deadline: float = 30.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _nothing_twice(emulator: RunningEmulator) -> dict[str, int]:
    counters = emulator.counters()
    by_key = counters["creations_by_external_id"]
    assert all(n == 1 for n in by_key.values()), by_key
    steps: dict[str, int] = counters["step_creations"]
    assert all(n == 1 for n in steps.values()), steps
    return steps


def test_kill_9_at_random_moments_under_faults_never_pays_twice(
        project: Project, served: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: never paid twice, with batching on. Five kill -9 at seeded random
    moments while 20% of requests fail or drop; then runs until one succeeds. Every
    batch was created once and every instance (a named step) was created once."""
    project.write("fan", FAN)
    # The runs after the kills (in this process) pause at most 10 ms between attempts:
    # what is checked is what got created, not the back-off (~10 s of sleep otherwise).
    monkeypatch.setenv("CIVFLOW_BACKOFF_CAP", "0.01")
    rng = random.Random(20261125)
    served.set_faults(error_rate=0.2, drop_rate=0.2)
    for round_ in range(5):
        process = spawn(project, served, "fan", log=f"kill{round_}")
        time.sleep(rng.uniform(0, 2))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        _nothing_twice(served)
    served.set_faults(time_scale=0)
    codes = []
    for _ in range(10):
        outcome = project.run("fan")
        assert "Traceback" not in outcome.text
        codes.append(outcome.code)
        if outcome.code == 0:
            break
    assert codes[-1] == 0 and set(codes[:-1]) <= {5, 6}, codes
    served.set_faults(error_rate=0, drop_rate=0)
    lock = check_artifacts(project, "fan")
    assert len(lock["instances"]) == 13
    assert len(_nothing_twice(served)) == 13
    # Batches: far fewer workflows than instances.
    assert workflows_made(served) < 13
    again = project.run("fan")
    assert again.code == 0 and "13 cached" in again.err, again.text
    assert len(_nothing_twice(served)) == 13


def test_a_resumed_run_reattaches_to_the_batch_whatever_its_only(
        project: Project, served: RunningEmulator) -> None:
    """Promise: never paid twice. A run killed while a batch of clips is in flight (its
    POST still long-polling, so no workflow id reached the journal): `run --only hero`
    finds the batch by its externalId, follows it and records all three clips; the full
    run after that submits nothing."""
    project.write("pair", HERO_AND_CLIPS)
    served.set_faults(time_scale=1)  # a video takes long: the batch is still running
    process = spawn(project, served, "pair", log="crash")
    assert _wait_for(lambda: workflows_made(served) == 2), (project.root / "crash.err").read_text()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    intents = [r for r in project.journal_records() if r.get("event") == "intent"
               and str(r.get("instance", "")).startswith("clip")]
    assert len(intents) == 3 and len({r["batch"] for r in intents}) == 1
    served.set_faults(time_scale=0)
    only = project.run("pair", "--only", "hero", "--force", "hero")
    assert only.code == 0, only.text
    lock = project.lock("pair")["instances"]
    assert {"clip[take=1]", "clip[take=2]", "clip[take=3]"} <= set(lock)
    assert len({lock[f"clip[take={n}]"]["workflowId"] for n in (1, 2, 3)}) == 1
    full = project.run("pair")
    assert full.code == 0 and "4 cached" in full.err, full.text
    assert workflows_made(served) == 3  # hero, the clips' batch, and hero again (--force)
    _nothing_twice_but_forced(served)


def _nothing_twice_but_forced(emulator: RunningEmulator) -> None:
    counters = emulator.counters()
    assert all(n == 1 for n in counters["creations_by_external_id"].values())
    steps = counters["step_creations"]
    assert all(steps[f"clip[take={n}]"] == 1 for n in (1, 2, 3)), steps
