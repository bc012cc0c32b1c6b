"""`plan` says which instances share a workflow and `render` shows the fused bodies, as
`run` with the same `batch` submits them (tests/e2e/test_batch.py checks run agrees)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.review.support import MODEL, cli

CHAIN = f"""\
version: 1
name: lanes
batch: 10
defaults:
  imageGen: {{engine: sdcpp, ecosystem: sdxl, operation: createImage, model: "{MODEL}",
             width: 64, height: 64}}
steps:
  hero:
    type: imageGen
    matrix: {{seed: [1, 2, 3]}}
    input: {{prompt: a fox, seed: "{{{{ matrix.seed }}}}"}}
  up:
    type: imageUpscaler
    matrix: {{i: [0, 1, 2]}}
    input:
      image: "{{{{ steps.hero.outputs[matrix.i].images[0].url }}}}"
      numberOfRepeats: 1
"""
HEROES = ["hero[seed=1]", "hero[seed=2]", "hero[seed=3]"]
UPS = ["up[i=0]", "up[i=1]", "up[i=2]"]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "lanes.yaml").write_text(CHAIN, encoding="utf-8")
    return tmp_path


def test_plan_names_the_workflows_and_what_is_fused(
        folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = cli(capsys, monkeypatch, folder, "plan", "lanes.yaml")
    assert text.code == 0, text.err
    assert "1 workflow(s) to submit:" in text.out
    assert f"workflow 1: {', '.join(HEROES + UPS)} (fused by $ref: {', '.join(UPS)})" \
        in text.out
    shown = cli(capsys, monkeypatch, folder, "plan", "lanes.yaml", "--format", "json")
    assert json.loads(shown.out)["workflows"] == [{"members": HEROES + UPS, "fused": UPS}]
    alone = cli(capsys, monkeypatch, folder, "plan", "lanes.yaml", "--batch", "1")
    assert "workflow" not in alone.out
    small = cli(capsys, monkeypatch, folder, "plan", "lanes.yaml", "--batch", "2",
                "--format", "json")
    assert all(len(w["members"]) <= 2 for w in json.loads(small.out)["workflows"])


def test_render_shows_each_workflow_as_sent_with_refs(
        folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = cli(capsys, monkeypatch, folder, "render", "lanes.yaml")
    assert shown.code == 0, shown.err
    bodies = json.loads(shown.out)
    assert [b["workflow"] for b in bodies] == [HEROES + UPS]
    steps = bodies[0]["body"]["steps"]
    assert [s["name"] for s in steps] == HEROES + UPS
    assert steps[3]["input"]["image"]["$ref"] == "hero[seed=1]"
    one = json.loads(cli(capsys, monkeypatch, folder, "render", "lanes.yaml",
                         "--batch", "1").out)
    assert [b["instance"] for b in one][:3] == HEROES and one[0]["workflow"] == HEROES[:1]
