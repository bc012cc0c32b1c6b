"""Honest money in review: what merging costs, never netted against what it replaces.

main holds two paid pipelines; the branch changes the prompt of one (2 instances made
again), removes the other, adds a video only the run can price, and its author previews
the change on the emulator. The terminal plan, the PR comment and the report all say
the same sentence with the same numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from civflow.review.comment import buzz
from tests.review.support import MODEL, cli, commit, git, make_repo, run_paid, write

SHOTS = f"""\
version: 1
name: shots
steps:
  shot:
    type: imageGen
    matrix:
      seed: [1, 2]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "a teapot on marble, take {{{{ matrix.seed }}}}"
      seed: "{{{{ matrix.seed }}}}"
      width: 256
      height: 256
      steps: 10
"""
OLD = SHOTS.replace("name: shots", "name: old").replace("teapot", "kettle")
CLIP = """\
version: 1
name: clip
steps:
  clip:
    type: videoGen
    input:
      engine: veo3
      prompt: "a teapot turning slowly"
      generateAudio: false
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("money") / "repo")
    write(root, {"pipelines/shots.yaml": SHOTS, "pipelines/old.yaml": OLD})
    run_paid(root, "pipelines/shots.yaml")
    run_paid(root, "pipelines/old.yaml")
    commit(root, "paid shots")
    git(root, "checkout", "-q", "-b", "change")
    write(root, {"pipelines/shots.yaml": SHOTS.replace("on marble", "on slate"),
                 "pipelines/clip.yaml": CLIP})
    (root / "pipelines" / "old.yaml").unlink()
    (root / "pipelines" / "old.lock.json").unlink()
    done = subprocess.run([sys.executable, "-m", "civflow", "run", "pipelines/shots.yaml",
                           "--emulator"], cwd=root, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "CIVFLOW_EMULATOR_TIME_SCALE": "0",
                               "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert done.returncode == 0, done.stderr  # the author's free preview
    commit(root, "slate, a clip, no kettle")
    return root


def _paid(root: Path, name: str) -> float:
    text = git(root, "show", f"main:pipelines/{name}.lock.json")
    return sum(float(e["cost"]) for e in json.loads(text)["instances"].values())


def _plan(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, root: Path,
          fmt: str) -> str:
    done = cli(capsys, monkeypatch, root, "plan", "pipelines", "--base", "main",
               "--format", fmt)
    assert done.code == 0, done.err
    return done.out


def test_the_delta_is_what_merging_costs(repo: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    data: dict[str, Any] = json.loads(_plan(capsys, monkeypatch, repo, "json"))
    by_name = {p["name"]: p for p in data["pipelines"]}
    # New work is positive, although the author previewed it on the emulator.
    shots = by_name["shots"]
    assert shots["delta"] == shots["estimate"] > 0
    assert shots["base_spent"] == pytest.approx(_paid(repo, "shots"))
    # Removed work costs nothing to merge; what it replaces is shown, not subtracted.
    old = by_name["old"]
    assert old["delta"] == 0 and old["base_spent"] == pytest.approx(_paid(repo, "old"))
    assert old["base_spent"] > 0
    # A video only the run can price is counted as such, never as 0 Buzz.
    clip = by_name["clip"]
    assert clip["unpriced"] == 1 and clip["delta"] == 0
    assert data["delta"] == pytest.approx(shots["delta"]) and data["unpriced"] == 1
    assert data["base_spent"] == pytest.approx(_paid(repo, "shots") + _paid(repo, "old"))
    for inst in shots["instances"]:
        assert any("made on the emulator" in r for r in inst["decision_reasons"]), inst


def test_plan_comment_and_report_say_the_same(repo: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    data: dict[str, Any] = json.loads(_plan(capsys, monkeypatch, repo, "json"))
    sentence = (f"merging costs {buzz(data['delta'])} Buzz + 1 priced at run time · "
                f"replaces {buzz(data['base_spent'])} Buzz spent on the base")
    assert sentence in _plan(capsys, monkeypatch, repo, "text")
    markdown = _plan(capsys, monkeypatch, repo, "markdown")
    assert sentence.replace("merging costs " + buzz(data["delta"]) + " Buzz + 1 priced at run "
                            "time", f"**merging costs {buzz(data['delta'])} Buzz + 1 priced "
                            "at run time**") in markdown
    done = cli(capsys, monkeypatch, repo, "report", "pipelines", "--base", "main",
               "--out", "report")
    assert done.code == 0, done.err
    page = (repo / "report" / "index.html").read_text(encoding="utf-8")
    assert sentence in page
    for text in (markdown, page):
        assert "Δ" not in text and "−" not in text
