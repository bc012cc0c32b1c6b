"""Fusion: a chain whose inputs are paths into upstream outputs goes out as one workflow
with `$ref`s, and is recorded exactly as if each instance had been sent on its own.

Over real HTTP against the emulator; a reference run of the same pipeline with
`--batch 1` (one workflow per instance, no fusion) in another project is the yardstick
for fingerprints, requests, seeds and outputs.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import civflow
from civflow.check import check_pipeline
from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.grouping import group_plan
from civflow.loading import load_pipeline
from tests.e2e.support import (
    CHAIN,
    MODEL,
    SECRET,
    Project,
    aim,
    check_artifacts,
    spawn,
    workflows_made,
)

LANES = f"""\
version: 1
name: lanes
batch: 2
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
      i: [0, 1, 2]
    input:
      prompt: "lane {{{{ matrix.i }}}}, a {{{{ ['fox', 'forbidden hare', 'wolf'][matrix.i] }}}}"
      width: 256
      height: 256
      steps: 10
  up:
    type: imageUpscaler
    matrix:
      i: [0, 1, 2]
    input:
      image: "{{{{ steps.gen.outputs[matrix.i].images[0].url }}}}"
      numberOfRepeats: 1
"""

ECHOES = """\
version: 1
name: echoes
batch: 3
steps:
  a:
    type: echo
    matrix: {i: [0, 1, 2, 3]}
    input: {message: "a{{ matrix.i }}"}
  b:
    type: echo
    matrix: {i: [0, 1, 2, 3]}
    input: {message: "{{ steps.a.outputs[matrix.i].message }}"}
  c:
    type: echo
    matrix: {i: [0, 1, 2, 3]}
    input: {message: "{{ steps.b.outputs[matrix.i].message }}"}
  tail:
    type: echo
    needs: [c]
    input: {message: "tail of {{ steps.c.outputs[3].message }}"}
"""


@pytest.fixture
def moderated(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """An emulator whose moderation blocks any prompt with the word 'forbidden'."""
    config = EmulatorConfig(announce=False, time_scale=0, api_key=SECRET,
                            blocked_words=("forbidden",))
    with start_emulator(config) as running:
        aim(monkeypatch, running)
        yield running


def _entries(project: Project, name: str) -> dict[str, Any]:
    data: dict[str, Any] = project.lock(name)["instances"]
    return data


def _reference(tmp_path: Path, project: Project, text: str, name: str) -> dict[str, Any]:
    """The same pipeline run one workflow per instance, in a project of its own."""
    other = tmp_path / "reference"
    other.mkdir()
    here = Path.cwd()
    try:
        import os
        os.chdir(other)
        ref = Project(other, project.capsys)
        ref.write(name, text)
        ref.run(name, "--batch", "1")
        return _entries(ref, name)
    finally:
        os.chdir(here)


def test_a_chain_is_one_workflow_per_lane_and_recorded_as_if_sent_alone(
        project: Project, moderated: RunningEmulator, tmp_path: Path) -> None:
    """Promise: fewer round trips, same lockfile. Three gen -> upscale lanes, `batch: 2`:
    each lane is one workflow (the upscale takes `$ref` to its gen's image). Every
    entry (fingerprint, request, seed, outputs) equals the one-workflow-per-instance
    run's; the re-run pays nothing."""
    text = LANES.replace("forbidden hare", "hare")
    project.write("lanes", text)
    outcome = project.run("lanes")
    assert outcome.code == 0, outcome.text
    assert workflows_made(moderated) == 3
    counters = moderated.counters()
    assert counters["steps_created"] == 6
    entries = _entries(project, "lanes")
    assert len(entries) == 6
    for i in (0, 1, 2):
        assert entries[f"gen[i={i}]"]["workflowId"] == entries[f"up[i={i}]"]["workflowId"]
    check_artifacts(project, "lanes")
    assert sum(e["cost"] for e in entries.values()) == counters["buzz_charged"]

    reference = _reference(tmp_path, project, text, "lanes")
    assert set(reference) == set(entries)
    for name, entry in entries.items():
        mine = {k: entry[k] for k in ("fingerprint", "request", "seed", "type", "step")}
        theirs = {k: reference[name][k] for k in mine}
        assert mine == theirs, name
        assert [a["sha256"] for a in entry["artifacts"]] == \
            [a["sha256"] for a in reference[name]["artifacts"]], name
    before = moderated.counters()["workflows_created"]
    again = project.run("lanes")
    assert again.code == 0 and "6 cached" in again.err, again.text
    assert moderated.counters()["workflows_created"] == before


def test_a_blocked_source_fails_its_lane_only(project: Project,
                                             moderated: RunningEmulator) -> None:
    """Promise: a failed or blocked step fails only its instance: the blocked gen's
    upscale is canceled by the orchestrator; the other lanes (already in flight with
    it, paid once) are recorded. Unfused, `up` would wait for all of `gen` and be
    skipped as a whole; fused lanes cannot wait, so they finish (docs/guide/batching.md).
    The re-run never re-sends the blocked lane."""
    project.write("lanes", LANES)
    outcome = project.run("lanes")
    assert outcome.code == 7, outcome.text
    assert workflows_made(moderated) == 3
    entries = _entries(project, "lanes")
    assert set(entries) == {"gen[i=0]", "gen[i=2]", "up[i=0]", "up[i=2]"}
    assert "gen[i=1]" in outcome.err
    again = project.run("lanes")  # gen is incomplete, so up waits (as unfused)
    assert again.code == 7 and "2 cached" in again.err, again.text
    assert set(_entries(project, "lanes")) == set(entries)
    retried = project.run("lanes", "--retry-failed")
    assert retried.code == 7, retried.text
    assert workflows_made(moderated) == 3
    assert all(n == 1 for n in moderated.counters()["step_creations"].values())


def test_a_three_level_chain_fuses_and_a_step_that_needs_more_waits(
        project: Project, moderated: RunningEmulator) -> None:
    """Promise: fusion covers chains of any depth by `$ref`; a step outside the chain
    (`tail`, a text built around an output) runs as before, from the real output."""
    project.write("echoes", ECHOES)
    checked = check_pipeline(load_pipeline(project.root / "pipelines" / "echoes.yaml"))
    predicted = group_plan(checked, civflow.plan(checked)).workflows
    assert [b.members for b in predicted] == [
        ("a[i=0]", "b[i=0]", "c[i=0]"), ("a[i=1]", "b[i=1]", "c[i=1]"),
        ("a[i=2]", "b[i=2]", "c[i=2]"), ("a[i=3]", "b[i=3]", "c[i=3]")]
    assert predicted[0].refs["c[i=0]"][0].wire() == {"$ref": "b[i=0]", "path": "output.message"}
    outcome = project.run("echoes")
    assert outcome.code == 0, outcome.text
    assert workflows_made(moderated) == 5  # four lanes, then tail
    entries = _entries(project, "echoes")
    assert entries["c[i=2]"]["output"]["message"] == "a2"
    assert entries["tail"]["output"]["message"] == "tail of a3"
    for batch in predicted:  # plan and run agree
        assert len({entries[n]["workflowId"] for n in batch.members}) == 1
    assert project.run("echoes").code == 0 and workflows_made(moderated) == 5


def test_kill_9_during_fused_lanes_never_pays_twice(project: Project,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: never paid twice, with fusion on. kill -9 at seeded random moments while
    requests fail or drop; the fused lanes are settled as units by the next runs and
    every instance (a named step) was created once; fingerprints are the real ones."""
    with start_emulator(EmulatorConfig(announce=False, time_scale=0.3, api_key=SECRET,
                                       fault_seed=5)) as served:
        aim(monkeypatch, served)
        # The runs after the kills (in this process): back-off of at most 10 ms.
        monkeypatch.setenv("CIVFLOW_BACKOFF_CAP", "0.01")
        project.write("echoes", ECHOES.replace("batch: 3", "batch: 6"))
        rng = random.Random(91)
        served.set_faults(error_rate=0.2, drop_rate=0.2)
        for round_ in range(4):
            process = spawn(project, served, "echoes", log=f"kill{round_}")
            time.sleep(rng.uniform(0, 1.5))
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        served.set_faults(time_scale=0)
        for _ in range(10):
            outcome = project.run("echoes")
            assert "Traceback" not in outcome.text
            if outcome.code == 0:
                break
        assert outcome.code == 0, outcome.text
        counters = served.counters()
        assert all(n == 1 for n in counters["creations_by_external_id"].values())
        assert all(n == 1 for n in counters["step_creations"].values()), \
            counters["step_creations"]
        entries = _entries(project, "echoes")
        assert len(entries) == 13
        checked = check_pipeline(load_pipeline(project.root / "pipelines" / "echoes.yaml"))
        served.set_faults(error_rate=0, drop_rate=0)
        again = project.run("echoes")
        assert again.code == 0 and "13 cached" in again.err, again.text
        # The recorded fingerprints are the real ones: the plan finds everything cached.
        assert civflow.plan(checked).counts() == {"cached": 13}


def test_an_interrupted_fused_batch_is_settled_with_real_fingerprints(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: never paid twice. A run killed while fused lanes are in flight (their
    fingerprints not known when the intents were journaled): `run --only 'a[i=0]'`
    settles every lane, records each fused instance under the fingerprint its real
    inputs give (so the plan then finds it cached), and the full run only adds `tail`."""
    with start_emulator(EmulatorConfig(announce=False, time_scale=4, api_key=SECRET)) as served:
        aim(monkeypatch, served)
        project.write("echoes", ECHOES.replace("batch: 3", "batch: 6"))
        process = spawn(project, served, "echoes", log="crash")
        end = time.monotonic() + 30
        while time.monotonic() < end and workflows_made(served) < 2:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert workflows_made(served) == 2, (project.root / "crash.err").read_text()
        fused = [r for r in project.journal_records()
                 if r.get("event") == "intent" and r.get("refs")]
        assert len(fused) == 8
        served.set_faults(time_scale=0)
        only = project.run("echoes", "--only", "a[i=0]")
        assert only.code == 0, only.text
        entries = _entries(project, "echoes")
        assert len(entries) == 12 and entries["c[i=3]"]["output"]["message"] == "a3"
        checked = check_pipeline(load_pipeline(project.root / "pipelines" / "echoes.yaml"))
        assert civflow.plan(checked).counts() == {"cached": 12, "new": 1}
        full = project.run("echoes")
        assert full.code == 0 and "12 cached" in full.err, full.text
        assert workflows_made(served) == 3
        assert all(n == 1 for n in served.counters()["step_creations"].values())


def test_a_foreach_over_a_fixed_quantity_fuses_and_matches_the_unfused_run(
        project: Project, moderated: RunningEmulator, tmp_path: Path) -> None:
    """Promise: fusion covers a foreach whose count the input fixes (hero's
    `quantity: 2`): hero, both upscales (named after their images once those exist) and
    the clip go out as one workflow; every entry equals the unfused run's."""
    text = CHAIN.replace("name: chain", "name: chain\nbatch: 10")
    path = project.write("chain", text)
    checked = check_pipeline(load_pipeline(path))
    predicted = group_plan(checked, civflow.plan(checked)).workflows
    assert [b.members for b in predicted] == [("hero", "upscale[#0]", "upscale[#1]", "clip")]
    outcome = project.run("chain")
    assert outcome.code == 0, outcome.text
    assert workflows_made(moderated) == 1
    entries = _entries(project, "chain")
    assert len({e["workflowId"] for e in entries.values()}) == 1
    check_artifacts(project, "chain")
    reference = _reference(tmp_path, project, text, "chain")
    for name in ("hero", "clip"):
        for key in ("fingerprint", "request", "seed"):
            assert entries[name][key] == reference[name][key], (name, key)
    # A foreach instance is named by its item, whose blob id the server draws (another
    # project, other ids): the same requests, so the same fingerprints, under either name.
    def ups(found: dict[str, Any]) -> set[str]:
        return {e["fingerprint"] for n, e in found.items() if n.startswith("upscale[")}
    assert len(ups(entries)) == 2 and ups(entries) == ups(reference)
    again = project.run("chain")
    assert again.code == 0 and "4 cached" in again.err, again.text
