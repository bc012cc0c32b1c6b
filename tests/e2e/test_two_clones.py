"""Two clones of one repository pay for each instance once, with batching on by default.

The served emulator's counters (workflows created, steps created by instance name, Buzz
charged) prove what was paid for, whatever each clone's lockfile held when it ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.emulator import RunningEmulator
from tests.e2e.support import MODEL, Project, workflows_made

SWEEP = f"""\
version: 1
name: sweep
steps:
  shot:
    type: imageGen
    matrix:
      seed: [{", ".join(str(n) for n in range(1, 25))}]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: a paper boat on a pond
      width: 256
      height: 256
      steps: 10
      seed: "{{{{ matrix.seed }}}}"
"""


def _clone(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
           monkeypatch: pytest.MonkeyPatch) -> Project:
    root = tmp_path / name
    root.mkdir()
    monkeypatch.chdir(root)
    clone = Project(root, capsys)
    clone.write("sweep", SWEEP)
    return clone


def test_two_clones_whose_lockfiles_differ_pay_for_each_instance_once(
        tmp_path: Path, ready: tuple[Project, RunningEmulator],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: never paid twice, across clones and machines. One clone ran one instance
    alone first, so its batches hold other members than the second clone's would; the
    second clone finds every member in the first clone's workflows (its step's set tag,
    each member's own key) and pays nothing."""
    _, emulator = ready
    first = _clone(tmp_path, "first", capsys, monkeypatch)
    assert first.run("sweep", "--only", "shot[seed=1]").code == 0
    full = first.run("sweep")
    assert full.code == 0, full.text
    paid = emulator.counters()["buzz_charged"]
    assert workflows_made(emulator) == 3  # the one instance, then 23 in batches of up to 20

    monkeypatch.chdir(tmp_path)
    second = _clone(tmp_path, "second", capsys, monkeypatch)
    outcome = second.run("sweep")
    assert outcome.code == 0, outcome.text
    counters = emulator.counters()
    assert workflows_made(emulator) == 3 and counters["buzz_charged"] == paid
    assert set(counters["step_creations"].values()) == {1}
    assert len(counters["step_creations"]) == 24
    mine, theirs = second.lock("sweep")["instances"], first.lock("sweep")["instances"]
    assert {n: e["workflowId"] for n, e in mine.items()} == \
        {n: e["workflowId"] for n, e in theirs.items()}
    assert "spent 0 Buzz" in outcome.err, outcome.text


def test_a_step_batched_by_default_uses_few_workflows_and_batch_1_restores_one_each(
        tmp_path: Path, ready: tuple[Project, RunningEmulator],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, emulator = ready
    clone = _clone(tmp_path, "batched", capsys, monkeypatch)
    plan = clone.cli("plan", "pipelines/sweep.yaml")
    assert plan.code == 0 and "2 workflow(s) to submit" in plan.text, plan.text
    assert clone.run("sweep").code == 0
    assert workflows_made(emulator) == 2
    one = _clone(tmp_path, "one-each", capsys, monkeypatch)
    one.write("sweep", SWEEP.replace("name: sweep", "name: sweep\nbatch: 1")
              .replace("a paper boat", "a paper crane"))
    assert one.run("sweep").code == 0
    assert workflows_made(emulator) == 2 + 24


CHAIN_SWEEP = f"""\
version: 1
name: chained
steps:
  shot:
    type: imageGen
    matrix:
      i: [0, 1, 2, 3]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "a paper boat on a pond, take {{{{ matrix.i }}}}"
      width: 256
      height: 256
      steps: 10
  big:
    type: imageUpscaler
    matrix:
      i: [0, 1, 2, 3]
    input:
      image: "{{{{ steps.shot.outputs[matrix.i].images[0].url }}}}"
      numberOfRepeats: 1
"""


def test_a_chain_fused_on_one_clone_is_not_paid_again_on_another(
        tmp_path: Path, ready: tuple[Project, RunningEmulator],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The downstream instances rode fused in the first clone's workflows: the second
    clone recognises them by their keys (their request and their sources' keys) and
    records them from there."""
    _, emulator = ready
    first = _clone(tmp_path, "first", capsys, monkeypatch)
    first.write("chained", CHAIN_SWEEP)
    assert first.run("chained").code == 0
    made = emulator.counters()["steps_created"]
    assert made == 8 and workflows_made(emulator) == 1  # the upscales rode fused
    monkeypatch.chdir(tmp_path)
    second = _clone(tmp_path, "second", capsys, monkeypatch)
    second.write("chained", CHAIN_SWEEP)
    outcome = second.run("chained")
    assert outcome.code == 0, outcome.text
    assert emulator.counters()["steps_created"] == made
    mine, theirs = second.lock("chained")["instances"], first.lock("chained")["instances"]
    assert {n: e["fingerprint"] for n, e in mine.items()} == \
        {n: e["fingerprint"] for n, e in theirs.items()}
