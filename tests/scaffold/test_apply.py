"""Apply from the pull request, end to end: real git clones, the workflow's own shell
steps, a fake `gh`, and the emulator's engine standing in for the real API.

A maintainer's `/civflow apply` (or the `civflow:apply` label) runs the pull request's
pipelines for real under the repository's cap, commits the lockfile back to the branch
and refreshes the sticky comment; after the merge, the default branch's run finds
nothing to run. A non-maintainer's comment, a fork's pull request and a pull request
that changes civflow's own configuration (to raise its cap) get no apply at all.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.scaffold.starter import WORKFLOW_FILE
from tests.scaffold.actions import (
    StepFailed,
    base_env,
    comments,
    condition,
    git_in,
    install_fake_gh,
    load_workflow,
    plant_pull,
    run_job,
)

SECRET = "sk-test-apply-0123456789abcdef"
MARKER = "<!-- civflow-plan -->"
APPLY = "/civflow apply"


class Studio:
    """A bare origin, a developer's clone started by `civflow init`, and CI clones."""

    def __init__(self, tmp: Path, api: RunningEmulator) -> None:
        self.tmp, self.api = tmp, api
        self.env = base_env()
        self.origin = tmp / "origin.git"
        git_in(tmp, "init", "-q", "--bare", "-b", "main", str(self.origin), env=self.env)
        self.dev = tmp / "dev"
        done = subprocess.run(["civflow", "init", str(self.dev), "--no-hooks"], env=self.env,
                              text=True, capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        self.git("checkout", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "start")
        self.git("remote", "add", "origin", str(self.origin))
        self.git("push", "-q", "origin", "main")
        self.flow = load_workflow((self.dev / WORKFLOW_FILE).read_text(encoding="utf-8"))
        self.state = install_fake_gh(tmp / "bin")
        self.job_env = base_env(
            CIVITAI_BASE_URL=api.url, GITHUB_REPOSITORY="studio/art",
            PIPELINES=self.flow["env"]["PIPELINES"], FAKE_GH_STORE=str(self.state),
            PATH=f"{tmp / 'bin'}:{base_env()['PATH']}")
        self.outputs: list[str] = []
        self.clones = 0

    def git(self, *args: str) -> str:
        return git_in(self.dev, *args, env=self.env)

    def clone(self, branch: str) -> Path:
        """A fresh clone at `branch`, as actions/checkout makes it (every branch fetched)."""
        self.clones += 1
        folder = self.tmp / f"ci-{self.clones}"
        git_in(self.tmp, "clone", "-q", "-b", branch, str(self.origin), str(folder),
               env=self.env)
        return folder

    def created(self) -> int:
        """Instances the API made (steps of created workflows: batches hold several)."""
        return int(self.api.counters()["steps_created"])

    def main_run(self) -> list[str]:
        context = {
            "github.event_name": "push", "github.ref_name": "main",
            "github.event.repository.default_branch": "main", "github.run_id": "41",
            "secrets.CIVITAI_API_KEY": SECRET, "vars.CIVFLOW_MAX_COST": "200",
            "vars.CIVFLOW_REMOTE": "", "secrets.AWS_ACCESS_KEY_ID": "",
            "secrets.AWS_SECRET_ACCESS_KEY": "",
        }
        job = self.flow["jobs"]["run"]
        assert condition(job["if"], context)
        return run_job(job, self.clone("main"), context,
                       {**self.job_env, "GITHUB_REF_NAME": "main"}, self.outputs)

    def branch(self, name: str, old: str, new: str, path: str = "pipelines/hello.yaml") -> None:
        self.git("checkout", "-q", "main")
        self.git("pull", "-q", "origin", "main")
        self.git("checkout", "-q", "-b", name)
        file = self.dev / path
        text = file.read_text(encoding="utf-8")
        assert old in text, (path, old)
        file.write_text(text.replace(old, new), encoding="utf-8")
        self.git("commit", "-q", "-am", f"{name}: {new}")
        self.git("push", "-q", "origin", name)

    def context(self, pr: int, *, event: str = "issue_comment", body: str = APPLY,
                association: str = "MEMBER", label: str = "") -> dict[str, str]:
        number = "github.event.pull_request.number || github.event.issue.number"
        return {
            "github.event_name": event, "github.event.comment.body": body,
            "github.event.comment.author_association": association,
            "github.event.label.name": label, number: str(pr), "github.token": "ghs-token",
            "github.run_id": "77", "secrets.CIVITAI_API_KEY": SECRET,
            "vars.CIVFLOW_MAX_COST": "200", "vars.CIVFLOW_REMOTE": "",
            "secrets.AWS_ACCESS_KEY_ID": "", "secrets.AWS_SECRET_ACCESS_KEY": "",
            "steps.upload.outputs.artifact-url":
                "https://github.com/studio/art/actions/runs/77/artifacts/9",
        }

    def approve(self, pr: int, branch: str, **how: str) -> dict[str, str] | None:
        """The approval job; its outputs, or None when it refused (nothing else ran)."""
        context = self.context(pr, **how)
        job = self.flow["jobs"]["approve"]
        if not condition(job["if"], context):
            return None
        try:
            run_job(job, self.clone(branch), context, self.job_env, self.outputs)
        except StepFailed:
            return None
        outputs = {k.rsplit(".", 1)[1]: v for k, v in context.items()
                   if k.startswith("steps.pr.outputs.")}
        assert outputs["head"] == branch
        return outputs

    def apply(self, pr: int, branch: str, *, meanwhile: Callable[[], None] | None = None,
              **how: str) -> list[str]:
        """The apply job in a fresh clone of `branch`; `meanwhile` runs after the clone,
        as a push to the branch during the job would."""
        approved = self.approve(pr, branch, **how)
        assert approved is not None, self.outputs[-1:]
        context = {**self.context(pr, **how),
                   **{f"needs.approve.outputs.{k}": v for k, v in approved.items()}}
        folder = self.clone(branch)
        if meanwhile is not None:
            meanwhile()
        return run_job(self.flow["jobs"]["apply"], folder, context, self.job_env,
                       self.outputs)


@pytest.fixture
def studio(tmp_path: Path) -> Any:
    config = EmulatorConfig(announce=False, time_scale=0, api_key=SECRET)
    with start_emulator(config) as api:
        made = Studio(tmp_path, api)
        made.main_run()
        assert made.created() == 4
        yield made
        assert not any(SECRET in out for out in made.outputs), "the API key was printed"


@pytest.mark.timeout(900)
def test_a_maintainers_apply_pays_once_and_the_merge_runs_nothing(studio: Studio) -> None:
    studio.branch("fox", "a lighthouse on a cliff at dusk", "a red fox in the snow")
    plant_pull(studio.state, 7, head="fox")
    ran = studio.apply(7, "fox")
    assert {"Apply", "Commit the lockfiles to the pull request", "Sticky comment"} <= set(ran)
    paid = studio.created()
    assert paid > 4  # the changed instances were made for real
    log = git_in(studio.origin, "log", "--format=%s", "fox", env=studio.env).splitlines()
    assert log[0].startswith("civflow: apply on pull request #7 (run 77)"), log
    (comment,) = comments(studio.state)
    assert comment["user"]["login"] == "github-actions[bot]" and comment["issue"] == 7
    body = comment["body"]
    assert body.startswith(MARKER) and "merging costs 0 Buzz" in body, body[:600]
    assert "already paid on this branch" in body

    # The same apply again (a second comment) pays nothing and edits the same comment.
    studio.apply(7, "fox")
    assert studio.created() == paid
    (again,) = comments(studio.state)
    assert again["id"] == comment["id"]

    # Merged: the default branch's run finds everything done.
    studio.git("checkout", "-q", "main")
    studio.git("pull", "-q", "origin", "main")
    studio.git("merge", "-q", "--no-edit", "origin/fox")
    studio.git("push", "-q", "origin", "main")
    studio.main_run()
    assert studio.created() == paid


def test_a_push_during_the_apply_keeps_both_and_the_paid_lockfile(studio: Studio) -> None:
    """The author pushes while the apply runs: the lockfile commit is rebased onto the
    branch, never lost to a rejected push."""
    studio.branch("gull", "a lighthouse on a cliff at dusk", "a gull at dusk")
    plant_pull(studio.state, 12, head="gull")

    def author_pushes() -> None:
        (studio.dev / "NOTES.md").write_text("why a gull\n", encoding="utf-8")
        studio.git("add", "NOTES.md")
        studio.git("commit", "-q", "-m", "notes")
        studio.git("push", "-q", "origin", "gull")
    studio.apply(12, "gull", meanwhile=author_pushes)
    log = git_in(studio.origin, "log", "--format=%s", "gull", env=studio.env).splitlines()
    assert log[0].startswith("civflow: apply on pull request #12") and log[1] == "notes", log
    lock = git_in(studio.origin, "show", "gull:pipelines/hello.lock.json", env=studio.env)
    assert "a gull at dusk" in lock


def test_the_label_asks_for_an_apply_too(studio: Studio) -> None:
    studio.branch("owl", "a lighthouse on a cliff at dusk", "an owl at dusk")
    plant_pull(studio.state, 8, head="owl")
    other = studio.context(8, event="pull_request_target", label="bug")
    assert not condition(studio.flow["jobs"]["approve"]["if"], other)
    studio.apply(8, "owl", event="pull_request_target", label="civflow:apply")
    assert studio.created() > 4


@pytest.mark.parametrize("how", [
    {"association": "NONE"},  # anyone may comment
    {"association": "CONTRIBUTOR"},
    {"body": "/civflow apply please"},  # not the command
], ids=["stranger", "contributor", "not-the-command"])
def test_only_a_maintainers_exact_command_approves(studio: Studio, how: dict[str, str]) -> None:
    studio.branch("cat", "a lighthouse on a cliff at dusk", "a cat at dusk")
    plant_pull(studio.state, 9, head="cat")
    assert studio.approve(9, "cat", **how) is None
    assert studio.created() == 4


def test_a_forks_pull_request_is_never_applied(studio: Studio) -> None:
    studio.branch("mallory", "a lighthouse on a cliff at dusk", "a lighthouse, at any cost")
    plant_pull(studio.state, 10, head="mallory", repo="mallory/art")
    assert studio.approve(10, "mallory") is None
    assert any("from a fork is never applied" in out for out in studio.outputs)
    assert studio.created() == 4


def test_a_pull_request_raising_its_own_cap_is_refused(studio: Studio) -> None:
    studio.branch("greedy", "${{ vars.CIVFLOW_MAX_COST }}", "100000", path=WORKFLOW_FILE)
    plant_pull(studio.state, 11, head="greedy")
    assert studio.approve(11, "greedy") is None
    assert any("changes civflow's configuration" in out for out in studio.outputs)
    assert studio.created() == 4
