"""Incremental re-runs: only what changed (and what depends on it) is submitted again."""

from __future__ import annotations

import json

from civflow.emulator import RunningEmulator
from tests.e2e.support import CHAIN, WORKFLOWS, Project, check_artifacts, created, requests_to


def _workflow_ids(project: Project) -> dict[str, str]:
    return {n: e["workflowId"] for n, e in project.lock("chain")["instances"].items()}


def test_nothing_changed_submits_nothing(ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    posts = requests_to(emulator, WORKFLOWS)
    again = project.run("chain")
    assert again.code == 0, again.text
    assert requests_to(emulator, WORKFLOWS) == posts  # not even a whatif
    assert created(emulator) == 4


def test_changing_one_input_reruns_it_and_its_dependents_only(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    before = _workflow_ids(project)

    # `motion` is read by clip alone.
    outcome = project.run("chain", "--var", "motion=fast zoom", "--update-lockfile")
    assert outcome.code == 0, outcome.text
    assert created(emulator) == 5
    after = _workflow_ids(project)
    assert {n for n in after if after[n] != before[n]} == {"clip"}
    assert "3 cached" in outcome.err and "1 succeeded" in outcome.err

    # `style` is read by hero and clip; the upscales depend on hero.
    outcome = project.run("chain", "--var", "motion=fast zoom", "--var", "style=oil",
                          "--update-lockfile")
    assert outcome.code == 0, outcome.text
    assert created(emulator) == 9
    check_artifacts(project, "chain")


def test_force_reruns_the_step_and_its_dependents(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    before = _workflow_ids(project)
    outcome = project.run("chain", "--force", "upscale")
    assert outcome.code == 0, outcome.text
    after = _workflow_ids(project)
    assert {n for n in after if after[n] != before[n]} == \
        {n for n in after if n.startswith("upscale[")} | {"clip"}
    assert len(after) == 4
    # Forcing resends the same fingerprint under a new externalId: a new workflow.
    assert created(emulator) == 7
    assert all(n == 1 for n in emulator.counters()["creations_by_external_id"].values())


def test_reroll_draws_and_records_a_new_seed(ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    first = project.lock("chain")["instances"]
    seed = first["hero"]["seed"]
    assert isinstance(seed, int) and first["hero"]["request"]["input"]["seed"] == seed

    # The drawn seed is sent again on the next run: nothing changes.
    assert project.run("chain").code == 0
    assert project.lock("chain")["instances"]["hero"]["seed"] == seed

    outcome = project.run("chain", "--reroll", "hero")
    assert outcome.code == 0, outcome.text
    second = project.lock("chain")["instances"]
    assert second["hero"]["seed"] != seed
    assert second["hero"]["request"]["input"]["seed"] == second["hero"]["seed"]
    assert {a["sha256"] for a in second["hero"]["artifacts"]}.isdisjoint(
        {a["sha256"] for a in first["hero"]["artifacts"]})
    # New images, so new upscale instances (named by content); the old ones are pruned.
    assert second["hero"]["workflowId"] != first["hero"]["workflowId"]
    assert second["clip"]["workflowId"] != first["clip"]["workflowId"]
    old_ups = {n for n in first if n.startswith("upscale[")}
    new_ups = {n for n in second if n.startswith("upscale[")}
    assert len(new_ups) == 2 and old_ups.isdisjoint(new_ups)
    assert created(emulator) == 8
    check_artifacts(project, "chain")


def test_one_off_vars_never_rewrite_the_committed_lockfile(
        ready: tuple[Project, RunningEmulator]) -> None:
    """A `run --var …` trial used to rewrite the committed lockfile with values nobody
    committed, and a plain plan afterwards said '4 changed'."""
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    committed = project.lock_path("chain").read_text(encoding="utf-8")
    trial = project.run("chain", "--var", "motion=fast zoom")
    assert trial.code == 0 and "1 succeeded" in trial.err, trial.text
    assert project.lock_path("chain").read_text(encoding="utf-8") == committed
    plain = project.cli("plan", "pipelines/chain.yaml")
    assert "4 cached" in plain.out and "note:" not in plain.err, plain.text
    again = project.cli("plan", "pipelines/chain.yaml", "--var", "motion=fast zoom")
    assert "4 cached" in again.out and "one-off vars (motion=\"fast zoom\")" in again.err
    assert created(emulator) == 5
    kept = project.run("chain", "--var", "motion=fast zoom", "--update-lockfile")
    assert kept.code == 0 and "4 cached" in kept.err, kept.text
    lock = project.lock("chain")
    assert lock["vars"] == {"motion": "fast zoom"}
    assert "made with vars motion=\"fast zoom\"" in project.cli(
        "plan", "pipelines/chain.yaml").err


def test_undoing_a_change_is_cached_and_the_lockfile_diff_stays_small(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Issue 15: results replaced by a change are kept on this machine (.civflow/entries),
    not in the committed lockfile, so its diff shows only what changed, and going back
    to the earlier prompt pays nothing."""
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    first = project.lock_path("chain").read_text(encoding="utf-8")
    project.write("chain", CHAIN.replace("slow pan", "slow tilt"))
    assert project.run("chain").code == 0
    assert "alternates" not in project.lock("chain")
    assert created(emulator) == 5
    project.write("chain", CHAIN)
    back = project.run("chain")
    assert back.code == 0 and "4 cached" in back.err, back.text
    assert created(emulator) == 5
    assert json.loads(project.lock_path("chain").read_text())["instances"] == \
        json.loads(first)["instances"]
