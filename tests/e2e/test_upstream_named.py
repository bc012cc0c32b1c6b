"""A change caused upstream reads as the upstream instance that changed: one matrix
member re-made, its downstream instances say `upstream shot[mug-marble] changed` in
`civflow plan`, the PR comment and the HTML report, never two content hashes."""

from __future__ import annotations

import html
import subprocess
from pathlib import Path

from civflow.emulator import RunningEmulator
from tests.e2e.support import MODEL, Project

SHOTS = f"""\
version: 1
name: shots
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
steps:
  shot:
    type: imageGen
    matrix:
      product: [mug, cap, tee]
      bg: [marble, linen]
    key: "{{{{ matrix.product }}}}-{{{{ matrix.bg }}}}"
    input:
      prompt: "a {{{{ matrix.product }}}} on {{{{ matrix.bg }}}}"
      width: 64
      height: 64
  hero:
    type: imageUpscaler
    input:
      image: "{{{{ steps.shot['mug-marble'].images[0].url }}}}"
      numberOfRepeats: 1
  hires:
    type: imageUpscaler
    foreach: "{{{{ steps.shot.instances }}}}"
    input:
      image: "{{{{ item.output.images[0].url }}}}"
      numberOfRepeats: 1
"""
# One matrix member's prompt changes; every other instance of `shot` stays as it is.
GLOSSY = SHOTS.replace(
    'prompt: "a {{ matrix.product }} on {{ matrix.bg }}"',
    "prompt: \"a {{ matrix.product }} on {{ matrix.bg }}{{ ', glossy' if "
    "matrix.product == 'mug' and matrix.bg == 'marble' else '' }}\"")
NAMED = "upstream shot[mug-marble] changed"
TOKEN = "civflow-blob:sha256"
DOWNSTREAM = ("hero", "hires[mug-marble]")


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                    "-c", "commit.gpgsign=false", *args], cwd=root, check=True,
                   capture_output=True, text=True, timeout=60)


def _line(text: str, instance: str) -> str:
    (line,) = [x for x in text.splitlines() if f" {instance} " in f"{x} "]
    return line


def _check_review(project: Project, report: Path) -> None:
    """`plan --base main` as text, the PR comment and the report name the re-made
    upstream instance for each downstream instance and show no content hash."""
    text = project.cli("plan", "pipelines", "--base", "main")
    assert text.code == 0, text.err
    assert TOKEN not in text.out, text.out
    for instance in DOWNSTREAM:
        at = text.out.index(f" {instance} ")
        assert text.out[at:].splitlines()[1].strip() == NAMED, text.out
    assert "hires[cap-linen]" not in text.out  # unchanged: not listed

    comment = project.cli("plan", "pipelines", "--base", "main", "--format", "markdown")
    assert comment.code == 0, comment.err
    shown = html.unescape(comment.out)
    assert TOKEN not in shown, shown
    for instance in DOWNSTREAM:
        assert NAMED in _line(shown, f"<code>{instance}</code>"), shown

    done = project.cli("report", "pipelines", "--base", "main", "--out", str(report))
    assert done.code == 0, done.err
    page = (report / "index.html").read_text(encoding="utf-8")
    assert TOKEN not in page
    for instance in DOWNSTREAM:
        pair = page[page.index(f'<div class="pair" data-status="changed" '
                               f'data-instance="{instance}"'):]
        assert pair.split("</ul>")[0].count(f"<li>{NAMED}</li>") == 1, pair[:2000]
    # The details of a request read the upstream output by its maker's name.
    assert "<dt>image</dt><dd>output of shot[mug-marble]</dd>" in page


def test_a_remade_upstream_instance_is_named_downstream(
        ready: tuple[Project, RunningEmulator], tmp_path: Path) -> None:
    project, _ = ready
    root = project.root
    project.write("shots", SHOTS)
    (root / ".gitignore").write_text(".civflow/\nout/\nreport*/\n", encoding="utf-8")
    _git(root, "init", "-q", "-b", "main")
    assert project.run("shots").code == 0
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "shots, run")

    _git(root, "checkout", "-q", "-b", "glossy")
    project.write("shots", GLOSSY)
    remade = project.run("shots", "--only", "shot[mug-marble]")
    assert remade.code == 0, remade.err

    # The upstream is re-made (its output is known): its readers are named by it.
    planned = project.cli("plan", "pipelines/shots.yaml")
    assert planned.code == 0, planned.err
    assert TOKEN not in planned.out and "input.image" not in planned.out, planned.out
    for instance in DOWNSTREAM:
        assert "changed" in _line(planned.out, instance)
        assert _line(planned.out, instance).split("changed", 1)[1].strip().startswith(
            f"{NAMED}  (~"), planned.out
    assert "cached" in _line(planned.out, "hires[mug-linen]")

    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "glossy mug, upstream re-made")
    _check_review(project, root / "report-upstream")

    # The downstream made again too: the lockfiles now differ in the hashes the
    # downstream requests read, and the review still names their maker.
    assert project.run("shots").code == 0
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "glossy mug, downstream re-made")
    _check_review(project, root / "report-all")
