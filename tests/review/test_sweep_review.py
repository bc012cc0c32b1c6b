"""`civflow plan --base` on the issue's sweep: a 200-instance LoRA sweep run on the
emulator and committed with its lockfile, then one prompt word and one LoRA strength
changed on a branch."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from civflow.review import compare
from civflow.review.comment import MARKER, MAX_COMMENT, buzz
from tests.review.support import (
    STYLES,
    SUBJECTS,
    SWEEP,
    cli,
    commit,
    git,
    make_repo,
    run_paid,
    write,
)

FOX = {f"shot[subject=fox,style={s}]" for s in STYLES}
INK = {f"shot[subject={s},style=ink]" for s in SUBJECTS}
CHANGED = FOX | INK


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """main: the sweep, run once on the emulator, lockfile committed; branch `change`:
    'snow' -> 'rain' in the fox clause (10 instances), ink's strength 0.6 -> 0.8 (20)."""
    root = make_repo(tmp_path_factory.mktemp("sweep") / "repo")
    write(root, {"pipelines/sweep.yaml": SWEEP})
    commit(root, "sweep")
    run_paid(root, "pipelines/sweep.yaml")
    commit(root, "lockfile")
    git(root, "checkout", "-q", "-b", "change")
    text = SWEEP.replace("in the snow", "in the rain").replace("    ink: 0.6", "    ink: 0.8")
    assert text.count("0.8") == 1
    write(root, {"pipelines/sweep.yaml": text})
    commit(root, "rain, and a stronger LoRA for ink")
    return root


def _lock_costs(root: Path) -> dict[str, float]:
    lock = json.loads((root / "pipelines" / "sweep.lock.json").read_text(encoding="utf-8"))
    return {name: float(entry["cost"]) for name, entry in lock["instances"].items()}


def _json(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
          root: Path) -> dict[str, Any]:
    done = cli(capsys, monkeypatch, root, "plan", "pipelines", "--base", "main",
               "--format", "json")
    assert done.code == 0, done.err
    data: dict[str, Any] = json.loads(done.out)
    return data


def test_comment_names_exactly_the_changed_instances_and_the_delta(
        sweep: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: the PR comment for one prompt word and one LoRA strength in a
    200-instance sweep is under 60,000 characters, lists exactly the 29 instances that
    change (none of the 171 others) and states the Buzz spent, the estimate and the delta."""
    done = cli(capsys, monkeypatch, sweep, "plan", "pipelines", "--base", "main",
               "--format", "markdown")
    assert done.code == 0, done.err
    md = done.out
    assert len(md) < MAX_COMMENT
    assert md.splitlines()[0] == MARKER
    listed = set(re.findall(r"^\| ~ \| <code>(.*?)</code> \|", md, re.MULTILINE))
    listed = {name.replace("&#91;", "[").replace("&#93;", "]") for name in listed}
    assert listed == CHANGED
    assert "29 changed, 0 added, 0 removed, 171 unchanged" in md
    assert "Truncated" not in md
    costs = _lock_costs(sweep)
    spent = sum(costs[name] for name in CHANGED)
    assert spent > 0
    data = _json(capsys, monkeypatch, sweep)
    assert data["base_spent"] == pytest.approx(spent)
    # What merging costs is the new work, never netted against what it replaces.
    assert data["delta"] == pytest.approx(data["estimate"]) and data["delta"] > 0
    assert f"replaces {buzz(spent)} Buzz spent on the base" in md
    assert f"**merging costs {buzz(data['delta'])} Buzz**" in md
    # The step's edits read as two lines, however many instances they touch.
    assert "<code>loras&#91;…&#64;789012&#93;</code>: 0.6 → 0.8 ×20" in md
    assert "<code>prompt</code>: &quot;…snow&quot; → &quot;…rain&quot; ×10" in md


def test_json_has_each_field_old_and_new(sweep: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: `--format json` carries every instance with its status and, for a
    changed one, each field old -> new, with both sides' lockfile entries."""
    data = _json(capsys, monkeypatch, sweep)
    (pipeline,) = data["pipelines"]
    assert pipeline["status"] == "modified"
    assert pipeline["counts"] == {"added": 0, "removed": 0, "changed": 29, "unchanged": 171}
    by_name = {i["instance"]: i for i in pipeline["instances"]}
    assert len(by_name) == 200
    assert {n for n, i in by_name.items() if i["status"] == "changed"} == CHANGED
    both = by_name["shot[subject=fox,style=ink]"]
    assert both["fields"] == [
        {"path": "loras[…@789012]", "kind": "changed", "old": 0.6, "new": 0.8},
        {"path": "prompt", "kind": "changed", "old": "a fox in ink style, in the snow",
         "new": "a fox in ink style, in the rain"}]
    assert both["decision"] == "changed" and both["estimate"] > 0
    assert both["base_entry"]["workflowId"] and both["base_entry"]["artifacts"]
    assert both["base_cost"] == both["base_entry"]["cost"]
    assert both["head_entry"] == both["base_entry"]  # the branch did not run it yet
    assert both["fingerprint"]["base"] != both["fingerprint"]["head"]
    owl = by_name["shot[subject=owl,style=ink]"]
    assert [f["path"] for f in owl["fields"]] == ["loras[…@789012]"]
    quiet = by_name["shot[subject=owl,style=oil]"]
    assert quiet["status"] == "unchanged" and quiet["fields"] == []
    assert quiet["decision"] == "cached" and quiet["estimate"] == 0


def test_terminal_diff(sweep: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: the text format is a readable diff: a summary, each changed instance
    marked `~` with its fields old → new, and nothing about unchanged instances."""
    done = cli(capsys, monkeypatch, sweep, "plan", "pipelines", "--base", "main")
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert lines[0].startswith("plan against main (")
    assert "29 changed, 0 added, 0 removed, 171 unchanged" in lines[0]
    assert sum(line.startswith("  ~ ") for line in lines) == 29
    at = next(i for i, line in enumerate(lines) if "shot[subject=fox,style=ink]" in line)
    assert lines[at + 1:at + 3] == [
        "      loras[…@789012]: 0.6 → 0.8",
        '      prompt: "a fox in ink style, in the snow" → "a fox in ink style, in the rain"']
    assert "subject=owl,style=oil" not in done.out


def test_without_a_base_every_instance_is_unchanged(sweep: Path) -> None:
    """Promise: `compare(paths, None)` reviews the head alone (for a report without
    --base): every instance unchanged against itself, nothing spent, delta = estimate."""
    review = compare(["pipelines"], None, cwd=sweep)
    (pipeline,) = review.pipelines
    assert pipeline.counts() == {"added": 0, "removed": 0, "changed": 0, "unchanged": 200}
    assert review.base_spent == 0 and review.delta == review.estimate
    first = pipeline.instances[0]
    assert first.head_entry is not None and first.base_entry == first.head_entry
    assert pipeline.head_lock_dir == sweep / "pipelines"
