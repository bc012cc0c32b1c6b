"""`plan --base` on a chain whose second step fans out over the first one's images,
run once on the emulator: edits downstream and upstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.review.support import MODEL, cli, commit, make_repo, run_paid, write

CHAIN = f"""\
version: 1
name: chain
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: a lighthouse at dusk
      width: 64
      height: 64
      quantity: 2
  web:
    type: convertImage
    foreach: "{{{{ steps.hero.output.images }}}}"
    input:
      image: "{{{{ item.url }}}}"
      transforms:
        - type: resize
          targetWidth: 32
      output:
        format: webp
        quality: 85
        lossless: false
        hideMetadata: true
"""


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("chain") / "repo")
    write(root, {"pipelines/chain.yaml": CHAIN})
    commit(root, "chain")
    run_paid(root, "pipelines/chain.yaml")
    commit(root, "lockfile")
    return root


def _review(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, root: Path,
            text: str) -> dict[str, Any]:
    write(root, {"pipelines/chain.yaml": text})
    done = cli(capsys, monkeypatch, root, "plan", "pipelines", "--base", "main",
               "--format", "json")
    assert done.code == 0, done.err
    (pipeline,) = json.loads(done.out)["pipelines"]
    data: dict[str, Any] = pipeline
    return data


def test_downstream_edit_changes_only_the_fanned_out_instances(
        chain: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: the fan-out's instances are compared with their base counterparts
    (resolved from the base lockfile's outputs): an edit to them alone leaves the
    upstream step unchanged."""
    pipeline = _review(capsys, monkeypatch, chain, CHAIN.replace("quality: 85", "quality: 90"))
    status = {i["instance"]: i["status"] for i in pipeline["instances"]}
    assert status.pop("hero") == "unchanged"
    assert len(status) == 2 and set(status.values()) == {"changed"}
    web = [i for i in pipeline["instances"] if i["step"] == "web"]
    assert all(i["fields"] == [{"path": "output.quality", "kind": "changed", "old": 85,
                                "new": 90}] for i in web)


def test_upstream_edit_marks_the_fan_out_changed(
        chain: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: when the upstream of a fan-out changes, the base's instances of the
    fan-out are 'changed' (re-expanded at run time), each counted once in the estimate
    and its base cost counted as replaced."""
    pipeline = _review(capsys, monkeypatch, chain, CHAIN.replace("at dusk", "at dawn"))
    by_name = {i["instance"]: i for i in pipeline["instances"]}
    assert by_name["hero"]["fields"] == [{"path": "prompt", "kind": "changed",
                                          "old": "a lighthouse at dusk",
                                          "new": "a lighthouse at dawn"}]
    web = [i for i in pipeline["instances"] if i["step"] == "web"]
    assert len(web) == 2 and len(by_name) == 3
    assert all(i["status"] == "changed" and "re-expanded at run time" in i["reasons"][0]
               for i in web)
    lock = json.loads((chain / "pipelines" / "chain.lock.json").read_text(encoding="utf-8"))
    spent = sum(e["cost"] for e in lock["instances"].values())
    assert pipeline["base_spent"] == pytest.approx(spent)
    per_instance = sum(i["estimate"] for i in pipeline["instances"])
    assert per_instance == pytest.approx(pipeline["estimate"])
