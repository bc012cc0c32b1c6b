"""Lockfiles in git: two branches merge without losing a paid instance; repair rebuilds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from civflow.emulator import RunningEmulator
from tests.e2e.support import MODEL, Project, created

PIPELINE = f"""\
version: 1
name: duo
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
  left:
    type: imageGen
    input:
      prompt: a red fox
      seed: 1
  right:
    type: imageGen
    input:
      prompt: a grey owl
      seed: 2
"""


def _git(project: Project, *args: str) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
                          cwd=project.root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _branch(project: Project, name: str, old: str, new: str) -> None:
    _git(project, "checkout", "-q", "-b", name, "main")
    path = project.root / "pipelines" / "duo.yaml"
    path.write_text(path.read_text().replace(old, new))
    assert project.run("duo").code == 0
    _git(project, "commit", "-q", "-am", name)


def test_two_branches_merge_with_the_driver_and_lose_no_paid_instance(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("duo", PIPELINE)
    _git(project, "init", "-q", "-b", "main")
    assert project.cli("lock", "install", "--repo", str(project.root)).code == 0
    assert project.run("duo").code == 0
    _git(project, "add", "pipelines", ".gitattributes")
    _git(project, "commit", "-q", "-m", "base")
    _branch(project, "fox", "a red fox", "a red fox in snow")
    _branch(project, "owl", "a grey owl", "a grey owl at night")
    paid = created(emulator)
    assert paid == 4

    _git(project, "checkout", "-q", "main")
    _git(project, "merge", "-q", "--no-edit", "fox")
    _git(project, "merge", "-q", "--no-edit", "owl")  # the lockfile would conflict as text
    text = project.lock_path("duo").read_text()
    assert "<<<<<<<" not in text
    plan = project.cli("plan", "pipelines/duo.yaml")
    assert "2 cached" in plan.out, plan.text
    assert "spent 0 Buzz" in project.run("duo").err
    assert created(emulator) == paid

    # Going back to an earlier prompt finds its result among the alternates.
    path = project.root / "pipelines" / "duo.yaml"
    path.write_text(path.read_text().replace("a red fox in snow", "a red fox"))
    again = project.run("duo")
    assert again.code == 0 and "2 cached" in again.err, again.text
    assert created(emulator) == paid


def test_repair_rebuilds_a_lost_lockfile_from_the_journals_without_paying(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("duo", PIPELINE)
    assert project.run("duo").code == 0
    project.lock_path("duo").write_text("<<<<<<< HEAD\nbroken\n>>>>>>> other\n")
    assert project.cli("plan", "pipelines/duo.yaml").code == 2  # a located error, no guess
    outcome = project.cli("lock", "repair", "pipelines/duo.yaml")
    assert outcome.code == 0 and "2 instances" in outcome.out, outcome.text
    run = project.run("duo")
    assert run.code == 0 and "2 cached" in run.err, run.text
    assert created(emulator) == 2
