"""An emulator's picture is never paid work: provenance in every lockfile entry.

The journey that broke: `civflow run --emulator`, commit, then a run against the real
API found everything cached and paid for nothing. Here "the real API" is the emulator's
engine with its self-announcing header off (tests/stand_in.py), and every emulator
(in-process or served on any port) announces itself. Counters on the served APIs show
what was submitted and charged.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.e2e.support import MODEL, SECRET, Project, aim, created

TEASER = f"""\
version: 1
name: teaser
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
    width: 256
    height: 256
    steps: 10
steps:
  shot:
    type: imageGen
    matrix:
      seed: [1, 2, 3]
    input:
      prompt: "a tea campaign key visual, take {{{{ matrix.seed }}}}"
      seed: "{{{{ matrix.seed }}}}"
"""


@pytest.fixture
def civitai() -> Iterator[RunningEmulator]:
    """An API that is not the emulator (it does not announce itself)."""
    with start_emulator(EmulatorConfig(time_scale=0, api_key=SECRET, announce=False)) as api:
        yield api


@pytest.fixture
def served() -> Iterator[RunningEmulator]:
    """The emulator served on a port of its own, as `civflow emulator` does."""
    with start_emulator(EmulatorConfig(time_scale=0, api_key=SECRET)) as api:
        yield api


def _charged(api: RunningEmulator) -> float:
    return float(api.counters()["buzz_charged"])


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                           "-c", "commit.gpgsign=false", *args], cwd=root, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def _preview(project: Project) -> Path:
    return project.root / ".civflow" / "previews" / "teaser.lock.json"


def test_emulator_run_then_commit_then_a_real_run_pays_for_every_instance(
        project: Project, civitai: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journey's blocker: following getting-started (emulator run, commit the
    lockfile) can never make a real run skip paid work."""
    project.write("teaser", TEASER)
    (project.root / ".gitignore").write_text(".civflow/\nout/\n", encoding="utf-8")
    previewed = project.cli("run", "pipelines/teaser.yaml", "--emulator")
    assert previewed.code == 0, previewed.text
    assert "on the emulator" in previewed.err and "nothing paid" in previewed.err
    assert not project.lock_path("teaser").exists()
    status = project.cli("status", "pipelines/teaser.yaml")
    assert status.code == 0 and "on the emulator (previews, not paid work)" in status.out
    assert status.out.count("succeeded") == 3, status.out
    preview = json.loads(_preview(project).read_text(encoding="utf-8"))
    assert {e["madeBy"] for e in preview["instances"].values()} == {"emulator"}
    _git(project.root, "init", "-q", "-b", "main")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-q", "-m", "teaser")
    assert "lock" not in _git(project.root, "ls-files")  # a preview is never committed

    plan = project.cli("plan", "pipelines/teaser.yaml", "--format", "json")
    assert plan.code == 0, plan.text
    planned = json.loads(plan.out)
    assert planned["counts"] == {"new": 3}, plan.out
    for inst in planned["instances"]:
        assert any("made on the emulator with these inputs: a preview, not paid work" in r
                   for r in inst["reasons"]), inst
        assert inst["estimate"] > 0
    assert project.cli("plan", "pipelines/teaser.yaml", "--emulator",
                       "--format", "json").out.count('"cached"') >= 3

    aim(monkeypatch, civitai)
    paid = project.run("teaser", "--max-cost", "500")
    assert paid.code == 0, paid.text
    assert created(civitai) == 3 and _charged(civitai) > 0
    lock = project.lock("teaser")
    assert {e["madeBy"] for e in lock["instances"].values()} == {"civitai"}
    again = project.run("teaser", "--max-cost", "500")
    assert again.code == 0 and created(civitai) == 3, again.text


def test_a_served_emulator_counts_as_the_emulator(
        project: Project, served: RunningEmulator, civitai: RunningEmulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`civflow emulator` on any port, aimed at like the real API, still makes previews."""
    project.write("teaser", TEASER)
    aim(monkeypatch, served)
    previewed = project.run("teaser")
    assert previewed.code == 0, previewed.text
    assert created(served) == 3 and "nothing paid" in previewed.err
    assert _preview(project).is_file() and not project.lock_path("teaser").exists()
    aim(monkeypatch, civitai)
    paid = project.run("teaser")
    assert paid.code == 0 and created(civitai) == 3, paid.text


def test_an_emulator_entry_in_the_committed_lockfile_is_not_cached(
        project: Project, civitai: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """A preview copied into the committed lockfile by hand still says who made it."""
    project.write("teaser", TEASER)
    assert project.cli("run", "pipelines/teaser.yaml", "--emulator").code == 0
    project.lock_path("teaser").write_bytes(_preview(project).read_bytes())
    aim(monkeypatch, civitai)
    paid = project.run("teaser")
    assert paid.code == 0 and created(civitai) == 3, paid.text
    lock = project.lock("teaser")
    assert {e["madeBy"] for e in lock["instances"].values()} == {"civitai"}
    # The previews are not kept as paid alternates either.
    assert all(e.get("madeBy") == "civitai" for e in lock.get("alternates", {}).values())


def test_paid_work_is_not_taken_for_a_preview_and_stays_untouched(
        project: Project, served: RunningEmulator, civitai: RunningEmulator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    project.write("teaser", TEASER)
    aim(monkeypatch, civitai)
    assert project.run("teaser").code == 0
    committed = project.lock_path("teaser").read_bytes()
    aim(monkeypatch, served)
    previewed = project.run("teaser")
    assert previewed.code == 0 and created(served) == 3, previewed.text
    assert project.lock_path("teaser").read_bytes() == committed


def test_a_lockfile_from_before_provenance_is_read_as_paid_work(
        project: Project, civitai: RunningEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries without `madeBy` (civflow before provenance) keep working: read as made by
    Civitai, as they always were, and left as they are."""
    project.write("teaser", TEASER)
    aim(monkeypatch, civitai)
    assert project.run("teaser").code == 0
    path = project.lock_path("teaser")
    old = path.read_text(encoding="utf-8").replace(' "madeBy": "civitai",', "")
    assert "madeBy" not in old
    path.write_text(old, encoding="utf-8")
    again = project.run("teaser")
    assert again.code == 0 and created(civitai) == 3, again.text
    assert "madeBy" not in path.read_text(encoding="utf-8")
