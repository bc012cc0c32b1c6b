"""`civflow checkout`: out/ matches the checked-out lockfile again, from the local store."""

from __future__ import annotations

import hashlib
import subprocess

from civflow.emulator import RunningEmulator
from tests.e2e.support import CHAIN, Project, created


def _git(project: Project, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
                   cwd=project.root, check=True, capture_output=True)


def test_checkout_after_a_branch_switch_restores_the_right_bytes_without_submitting(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    _git(project, "init", "-q", "-b", "main")
    _git(project, "add", "pipelines")
    _git(project, "commit", "-q", "-m", "base")
    base_hero = (project.root / "out" / "chain" / "hero" / "0.jpeg").read_bytes()

    _git(project, "checkout", "-q", "-b", "pr")
    project.write("chain", CHAIN.replace("a lighthouse at dusk", "a lighthouse at dawn"))
    assert project.run("chain").code == 0
    _git(project, "commit", "-q", "-am", "dawn")
    made = created(emulator)
    pr_hero = (project.root / "out" / "chain" / "hero" / "0.jpeg").read_bytes()
    assert pr_hero != base_hero

    _git(project, "checkout", "-q", "main")
    outcome = project.cli("checkout", "pipelines")
    assert outcome.code == 0, outcome.text
    assert "restored" in outcome.out
    hero = project.root / "out" / "chain" / "hero" / "0.jpeg"
    lock = project.lock("chain")["instances"]
    assert hashlib.sha256(hero.read_bytes()).hexdigest() == lock["hero"]["artifacts"][0]["sha256"]
    assert hero.read_bytes() == base_hero
    # The pull request's upscales (other content, other names) are gone from out/.
    folders = {p.name for p in (project.root / "out" / "chain").iterdir()}
    assert folders == {"hero", "clip", *(n for n in lock if n.startswith("upscale["))}
    assert created(emulator) == made
    assert "4 cached" in project.run("chain").err
