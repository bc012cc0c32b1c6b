"""Batching: ready instances of a step share workflows, and every promise of issue 7 holds.

Over real HTTP against the emulator, whose counters (workflows and steps created, Buzz
charged, by externalId and by step name) prove what was created and paid for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest

import civflow
from civflow.check import check_pipeline
from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.grouping import batches
from civflow.loading import load_pipeline
from tests.e2e.support import MODEL, SECRET, Project, aim, check_artifacts, workflows_made

GRID = f"""\
version: 1
name: grid
batch: 3
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
steps:
  gen:
    type: imageGen
    matrix:
      subject: [a fox, a hare, a forbidden owl, a wolf, a lynx, a crow, a deer]
    input:
      prompt: "{{{{ matrix.subject }}}} in the snow"
      width: 256
      height: 256
      steps: 10
"""

FAN_OUT = f"""\
version: 1
name: fanout
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: four tiles
      width: 1024
      height: 1024
      steps: 20
      quantity: 4
  up:
    type: imageUpscaler
    foreach: "{{{{ steps.hero.output.images | list }}}}"
    input:
      image: "{{{{ item.url }}}}"
      numberOfRepeats: 1
"""


@pytest.fixture
def moderated(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """An emulator whose moderation blocks any prompt with the word 'forbidden'."""
    config = EmulatorConfig(announce=False, time_scale=0, api_key=SECRET,
                            blocked_words=("forbidden",))
    with start_emulator(config) as running:
        aim(monkeypatch, running)
        yield running


def _steps_once(emulator: RunningEmulator) -> Counter[str]:
    counters = emulator.counters()
    made: dict[str, int] = counters["step_creations"]
    assert all(n == 1 for n in made.values()), made
    assert all(n == 1 for n in counters["creations_by_external_id"].values())
    return Counter(made)


def test_a_matrix_goes_out_in_batches_and_is_recorded_per_instance(
        project: Project, moderated: RunningEmulator) -> None:
    """Promise: fewer round trips, same lockfile. Seven instances, `batch: 3`: three
    workflows; every instance has its own entry (fingerprint, seed, outputs, cost) naming
    the workflow it ran in; the costs add up to what was charged; the re-run is cached.
    One blocked step fails only its instance: its batch-mates are collected, paid once."""
    project.write("grid", GRID)
    first = project.run("grid")
    assert first.code == 7, first.text  # the forbidden owl was blocked
    assert "gen[subject=a forbidden owl]" in first.err
    assert workflows_made(moderated) == 3
    made = _steps_once(moderated)
    assert len(made) == 7
    lock = check_artifacts(project, "grid")
    entries = lock["instances"]
    assert len(entries) == 6 and "gen[subject=a forbidden owl]" not in entries
    per_workflow = Counter(e["workflowId"] for e in entries.values())
    assert sorted(per_workflow.values()) == [1, 2, 3]  # the owl's batch-mates: 2
    assert all(e["fingerprint"].startswith("sha256:") and e["seed"] is not None
               for e in entries.values())
    charged = moderated.counters()["buzz_charged"]
    owl_share = charged - sum(e["cost"] for e in entries.values())
    assert 0 <= owl_share <= 2  # the blocked step's own share; nothing else unaccounted
    # The blocked step's journal record goes out with its batch-mates', in one write.
    finished = [r for r in project.journal_records() if r["event"] == "finished"]
    owl = next(r for r in finished if r["instance"] == "gen[subject=a forbidden owl]")
    mates = [r for r in finished if r["workflowId"] == owl["workflowId"]]
    assert len(mates) == 3 and {r["at"] for r in mates} == {owl["at"]}, mates

    again = project.run("grid")
    assert again.code == 7, again.text
    assert "6 cached" in again.err and "not sent again" in again.err
    assert workflows_made(moderated) == 3
    # Never resubmitted automatically, not even with --retry-failed (it was blocked).
    retried = project.run("grid", "--retry-failed")
    assert retried.code == 7 and workflows_made(moderated) == 3, retried.text


def test_batch_flag_overrides_the_key_and_batch_1_is_one_workflow_each(
        project: Project, moderated: RunningEmulator) -> None:
    """Promise: `--batch N` overrides the pipeline; 1 is the one-workflow-per-instance mode."""
    project.write("grid", GRID.replace("a forbidden owl", "an owl"))
    outcome = project.run("grid", "--batch", "1")
    assert outcome.code == 0, outcome.text
    assert workflows_made(moderated) == 7
    bad = project.run("grid", "--batch", "0")
    assert bad.code == 2, bad.text


def test_max_cost_reserves_a_batch_before_it_is_sent(project: Project,
                                                    moderated: RunningEmulator) -> None:
    """Promise: --max-cost is a hard cap with batches too: a batch's estimate is reserved
    before its POST, so only the members that fit are sent (exit 8); raising the cap
    goes on without paying for anything twice."""
    project.write("fanout", FAN_OUT)
    outcome = project.run("fanout", "--max-cost", "37", "--batch", "4")
    assert outcome.code == 8, outcome.text
    counters = moderated.counters()
    assert counters["buzz_charged"] <= 37
    assert workflows_made(moderated) == 2  # hero; then one batch of the two upscales that fit
    assert counters["steps_created"] == 3
    assert "2 instance(s) not submitted" in outcome.err
    more = project.run("fanout", "--max-cost", "100", "--batch", "4")
    assert more.code == 0, more.text
    assert moderated.counters()["steps_created"] == 5
    assert len(check_artifacts(project, "fanout")["instances"]) == 5


def test_plan_says_which_instances_share_a_workflow_and_run_agrees(
        project: Project, moderated: RunningEmulator) -> None:
    """Promise: plan and run agree: the batches `civflow.plan` predicts (through
    `grouping.batches`) are the workflows the run creates."""
    path = project.write("grid", GRID.replace("a forbidden owl", "an owl"))
    checked = check_pipeline(load_pipeline(path))
    predicted = batches(civflow.plan(checked).instances, 3)
    assert [len(b.members) for b in predicted] == [3, 3, 1]
    assert project.run("grid").code == 0
    entries = project.lock("grid")["instances"]
    for batch in predicted:
        assert len({entries[name]["workflowId"] for name in batch.members}) == 1
    assert len({entries[b.members[0]]["workflowId"] for b in predicted}) == 3
