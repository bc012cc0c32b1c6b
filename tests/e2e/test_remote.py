"""The team story on a real S3 server: artifacts travel through the remote, not by paying
again. Clone A runs and pushes; clone C (git clone: pipelines and lockfile, no .civflow/,
no out/) pulls, plans everything cached and runs nothing; clone B does not pull: its plan
says "cached (remote)" and its run fetches from the remote, submitting nothing and asking
Civitai for no blob; B changes one prompt, runs and pushes; A pulls the branch and the
objects and gets exactly that instance new.

The S3 server is moto's, on 127.0.0.1 (tests/remote/s3server.py); the API is the served
emulator of the other e2e tests.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from civflow.emulator import RunningEmulator
from civflow.store.objects import ObjectStore
from tests.e2e.support import CHAIN, Project, created
from tests.remote.s3server import KEY_SECRET, credentials, make_bucket, s3_server
from tests.remote.support import denying_server, silent_server

BUCKET = "civflow-team"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
                          cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout


def _objects(root: Path) -> set[str]:
    store = root / ".civflow" / "objects"
    return {p.parent.name + p.name for p in store.glob("sha256/*/*")} if store.exists() else set()


def _clone(tmp_path: Path, origin: Path, name: str,
           capsys: pytest.CaptureFixture[str]) -> Project:
    """A clone as git makes it: pipelines, lockfile and civflow.toml; no .civflow/, no out/."""
    _git(tmp_path, "clone", "-q", str(origin), name)
    clone = Project.__new__(Project)
    clone.root, clone.capsys = tmp_path / name, capsys
    assert not (clone.root / ".civflow").exists() and not (clone.root / "out").exists()
    return clone


def _blob_requests(emulator: RunningEmulator) -> int:
    """Requests for blobs (refreshes, metadata, content) the emulator has answered."""
    return sum(sum(by_status.values())
               for route, by_status in emulator.counters()["requests"].items()
               if "/blobs/" in route)


def _out_matches_lock(project: Project) -> int:
    """Every out/ file the lockfile names holds its bytes; returns how many there are."""
    count = 0
    for entry in project.lock("chain")["instances"].values():
        for artifact in entry["artifacts"]:
            path = project.root / "pipelines" / artifact["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact["sha256"], path
            count += 1
    return count


def test_a_team_shares_paid_results_through_the_remote(
        tmp_path: Path, s3_endpoint: str, emulator: RunningEmulator,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Promise: a fresh clone pulls instead of paying; a change made in one clone arrives
    in the other as exactly that instance, and nothing else is transferred twice."""
    credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("CIVFLOW_EMULATOR_TIME_SCALE", "0")
    monkeypatch.setenv("CIVFLOW_JITTER_SEED", "20241125")
    monkeypatch.delenv("CIVFLOW_BACKEND", raising=False)
    monkeypatch.delenv("CIVFLOW_REMOTE", raising=False)
    make_bucket(s3_endpoint, BUCKET)

    (tmp_path / "a").mkdir()
    a = Project(tmp_path / "a", capsys)
    (a.root / "civflow.toml").write_text(
        f'[remote]\nurl = "s3://{BUCKET}/team"\n[remote.options]\n'
        f'endpoint_url = "{s3_endpoint}"\n', encoding="utf-8")
    (a.root / ".gitignore").write_text(".civflow/\nout/\n", encoding="utf-8")
    a.write("chain", CHAIN)
    monkeypatch.chdir(a.root)
    assert a.run("chain").code == 0
    paid = created(emulator)
    pushed = a.cli("push")
    assert pushed.code == 0, pushed.text
    assert f"pushed {len(_objects(a.root))} object(s)" in pushed.out
    assert "already there" in pushed.out
    again = a.cli("push", "pipelines")
    assert again.code == 0 and "pushed 0 object(s)" in again.out, again.text
    _git(a.root, "init", "-q", "-b", "main")
    _git(a.root, "add", ".")
    _git(a.root, "commit", "-q", "-m", "chain")

    # C pulls first: out/ comes back from the remote, and the plan is simply cached.
    c = _clone(tmp_path, a.root, "c", capsys)
    monkeypatch.chdir(c.root)
    pulled = c.cli("pull")
    assert pulled.code == 0, pulled.text
    assert _objects(c.root) == _objects(a.root)
    assert _out_matches_lock(c) > 0
    plan = c.cli("plan", "pipelines/chain.yaml")
    assert plan.code == 0 and "4 cached" in plan.out, plan.text
    assert "cached (remote)" not in plan.out
    run = c.run("chain")
    assert run.code == 0 and "4 cached" in run.err, run.text
    assert created(emulator) == paid  # C paid nothing

    # B does not pull: plan and run know the remote by themselves.
    b = _clone(tmp_path, a.root, "b", capsys)
    monkeypatch.chdir(b.root)
    plan = b.cli("plan", "pipelines/chain.yaml")
    assert plan.code == 0 and "4 cached" in plan.out, plan.text
    assert plan.out.count("cached (remote)") == 4, plan.out
    as_json = json.loads(b.cli("plan", "pipelines/chain.yaml", "--format", "json").out)
    assert all(i["decision"] == "cached" and i["reasons"][0] == "cached (remote)"
               for i in as_json["instances"]), as_json
    blob_calls = _blob_requests(emulator)
    run = b.run("chain")
    assert run.code == 0 and "4 cached" in run.err, run.text
    assert created(emulator) == paid  # B paid nothing
    assert _blob_requests(emulator) == blob_calls  # and asked Civitai for no blob
    assert _objects(b.root) == _objects(a.root)
    assert _out_matches_lock(b) > 0
    assert "cached (remote)" not in b.cli("plan", "pipelines/chain.yaml").out

    before = b.lock("chain")["instances"]
    b.write("chain", CHAIN.replace("slow pan", "fast zoom"))
    changed = b.run("chain")
    assert changed.code == 0 and "1 succeeded" in changed.err, changed.text
    after = b.lock("chain")["instances"]
    new = {name for name in after if after[name] != before.get(name)}
    assert new == {"clip"}
    new_objects = {a_["sha256"] for a_ in after["clip"]["artifacts"]}
    assert b.cli("push").code == 0
    _git(b.root, "commit", "-q", "-am", "fast zoom")

    monkeypatch.chdir(a.root)
    _git(a.root, "pull", "-q", str(b.root), "main")
    had = _objects(a.root)
    back = a.cli("pull")
    assert back.code == 0, back.text
    assert _objects(a.root) - had == new_objects  # exactly the new instance's files
    assert f"pulled {len(new_objects)} object(s)" in back.out
    assert _out_matches_lock(a) > 0
    assert "4 cached" in a.cli("plan", "pipelines/chain.yaml").out
    assert created(emulator) == paid + 1
    # A pulled object is read-only in the store and hashes to its name.
    for sha in new_objects:
        assert ObjectStore(a.root / ".civflow" / "objects").verify(sha)


def test_push_without_a_remote_says_how_to_configure_one(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: a missing remote is a usage error with a hint, never a traceback."""
    project, _ = ready
    project.write("chain", CHAIN)
    outcome = project.cli("push")
    assert outcome.code != 0
    assert "no remote is configured" in outcome.err and "CIVFLOW_REMOTE" in outcome.err


def test_pull_of_a_damaged_object_is_reported_and_out_is_left_alone(
        ready: tuple[Project, RunningEmulator], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: an object whose hash does not match is reported by name, not used."""
    project, _ = ready
    remote = tmp_path / "team-remote"
    monkeypatch.setenv("CIVFLOW_REMOTE", remote.as_uri())
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    assert project.cli("push").code == 0
    hero = project.lock("chain")["instances"]["hero"]["artifacts"][0]
    key = remote / "sha256" / hero["sha256"][:2] / hero["sha256"][2:]
    key.write_bytes(b"not the picture")
    store = project.root / ".civflow" / "objects" / "sha256" / hero["sha256"][:2]
    for path in store.glob(hero["sha256"][2:]):
        path.chmod(0o644)
        path.unlink()
    (project.root / "pipelines" / hero["path"]).unlink()
    outcome = project.cli("pull")
    assert outcome.code != 0
    named = f"sha256/{hero['sha256'][:2]}/{hero['sha256'][2:]}"
    assert "do not match their sha256" in outcome.err and named in outcome.err
    assert "Traceback" not in outcome.text
    assert not (project.root / "pipelines" / hero["path"]).exists()


def _lose_files(project: Project) -> list[dict[str, str]]:
    """Delete every artifact from the store and out/, as a fresh clone lacks them."""
    artifacts = [a for e in project.lock("chain")["instances"].values() for a in e["artifacts"]]
    for artifact in artifacts:
        for path in [project.root / "pipelines" / artifact["path"],
                     project.root / ".civflow" / "objects" / "sha256" / artifact["sha256"][:2]
                     / artifact["sha256"][2:]]:
            if path.exists():
                path.chmod(0o644)
                path.unlink()
    return artifacts


def test_run_push_sends_what_the_run_made_and_push_true_does_it_unasked(
        ready: tuple[Project, RunningEmulator], tmp_path: Path) -> None:
    """Promise: `run --push`, or `push = true` in civflow.toml, leaves on the remote every
    object the run's instances name; a second run sends only what is new."""
    project, _ = ready
    share = tmp_path / "share"
    (project.root / "civflow.toml").write_text(f'[remote]\nurl = "{share.as_uri()}"\n',
                                               encoding="utf-8")
    project.write("chain", CHAIN)
    first = project.run("chain", "--push")
    assert first.code == 0, first.text
    made = {a["sha256"] for e in project.lock("chain")["instances"].values()
            for a in e["artifacts"]}
    assert f"pushed {len(made)} object(s)" in first.err
    assert {p.parent.name + p.name for p in share.glob("sha256/*/*")} == made
    (project.root / "civflow.toml").write_text(
        f'[remote]\nurl = "{share.as_uri()}"\npush = true\n', encoding="utf-8")
    project.write("chain", CHAIN.replace("slow pan", "fast zoom"))
    second = project.run("chain")
    assert second.code == 0, second.text
    now = project.lock("chain")["instances"]
    clip = {a["sha256"] for a in now["clip"]["artifacts"]}
    kept = {a["sha256"] for e in now.values() for a in e["artifacts"]} - clip
    assert f"pushed {len(clip)} object(s)" in second.err
    assert f"{len(kept)} already there" in second.err and kept <= made


def test_run_push_without_a_remote_is_refused_before_anything_is_spent(
        ready: tuple[Project, RunningEmulator], monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: `--push` with no remote configured is a usage error (exit 2) raised
    before any workflow is submitted."""
    project, emulator = ready
    monkeypatch.delenv("CIVFLOW_REMOTE", raising=False)
    project.write("chain", CHAIN)
    outcome = project.run("chain", "--push")
    assert outcome.code == 2 and "no remote is configured" in outcome.err, outcome.text
    assert created(emulator) == 0


def test_a_push_that_fails_after_a_good_run_loses_nothing(
        ready: tuple[Project, RunningEmulator], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a remote that refuses the push (403) after a successful run is reported
    clearly, exit code 1, no secret printed; the results are in the lockfile and the
    store, and the next run submits nothing."""
    project, emulator = ready
    credentials(monkeypatch, tmp_path)
    with denying_server() as endpoint:
        (project.root / "civflow.toml").write_text(
            f'[remote]\nurl = "s3://team/civflow"\npush = true\n[remote.options]\n'
            f'endpoint_url = "{endpoint}"\n', encoding="utf-8")
        project.write("chain", CHAIN)
        outcome = project.run("chain")
    assert outcome.code == 1, outcome.text
    assert "permission denied" in outcome.err
    assert "the push failed, the run did not" in outcome.err
    assert "civflow push pipelines/chain.yaml" in outcome.err
    assert KEY_SECRET not in outcome.text and "Traceback" not in outcome.text
    assert _out_matches_lock_of(project) > 0
    paid = created(emulator)
    (project.root / "civflow.toml").unlink()
    assert project.run("chain").code == 0 and created(emulator) == paid


def test_an_unreachable_remote_leaves_lost_files_to_the_blob_ids(
        ready: tuple[Project, RunningEmulator], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: with the remote down, plan still says cached and why the remote could
    not be asked; run downloads the files again by blob id and submits nothing."""
    project, emulator = ready
    credentials(monkeypatch, tmp_path)
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    paid = created(emulator)
    _lose_files(project)
    (project.root / "civflow.toml").write_text(
        '[remote]\nurl = "s3://team/civflow"\n[remote.options]\n'
        'endpoint_url = "http://127.0.0.1:9"\n'
        '[remote.options.config_kwargs]\nconnect_timeout = 1\nretries = {max_attempts = 1}\n',
        encoding="utf-8")
    plan = project.cli("plan", "pipelines/chain.yaml")
    assert plan.code == 0 and "4 cached" in plan.out, plan.text
    assert "the remote could not be asked (remote s3://team/civflow: cannot connect" \
        in plan.out
    assert "cached (remote)" not in plan.out
    run = project.run("chain")
    assert run.code == 0 and "4 cached" in run.err, run.text
    assert created(emulator) == paid
    assert _out_matches_lock_of(project) > 0


def test_a_remote_that_never_answers_holds_neither_plan_nor_run(
        ready: tuple[Project, RunningEmulator], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: every wait is bounded. An endpoint that accepts connections and never
    answers (a hung proxy) is given up after the remote's `timeout`: plan says why the
    remote could not be asked, run restores the files by blob id and submits nothing.
    (Before the bound, botocore's and s3fs's retries held `plan` for over six minutes.)"""
    project, emulator = ready
    credentials(monkeypatch, tmp_path)
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    paid = created(emulator)
    _lose_files(project)
    with silent_server() as endpoint:
        (project.root / "civflow.toml").write_text(
            f'[remote]\nurl = "s3://team/civflow"\ntimeout = 1\n[remote.options]\n'
            f'endpoint_url = "{endpoint}"\n', encoding="utf-8")
        plan = project.cli("plan", "pipelines/chain.yaml")
        assert plan.code == 0 and "4 cached" in plan.out, plan.text
        assert "the remote could not be asked (remote s3://team/civflow: no answer within " \
               "1 s while listing it)" in plan.out, plan.out
        run = project.run("chain")
        assert run.code == 0 and "4 cached" in run.err, run.text
    assert created(emulator) == paid
    assert _out_matches_lock_of(project) > 0


def test_a_damaged_object_on_the_remote_is_reported_and_never_used_by_run(
        ready: tuple[Project, RunningEmulator], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: run pulls only objects that hash to their names; a damaged one is
    reported, left on the remote, and its file comes back by blob id, unpaid."""
    project, emulator = ready
    share = tmp_path / "share"
    monkeypatch.setenv("CIVFLOW_REMOTE", share.as_uri())
    project.write("chain", CHAIN)
    assert project.run("chain", "--push").code == 0
    paid = created(emulator)
    artifacts = _lose_files(project)
    bad = artifacts[0]["sha256"]
    key = share / "sha256" / bad[:2] / bad[2:]
    key.chmod(0o644)
    key.write_bytes(b"x" * key.stat().st_size)
    plan = project.cli("plan", "pipelines/chain.yaml")
    assert plan.out.count("cached (remote)") == 4, plan.text
    run = project.run("chain")
    assert run.code == 0 and "4 cached" in run.err, run.text
    assert f"1 object(s) on the remote do not match their sha256 and were not used ({bad})" \
        in run.err
    assert created(emulator) == paid
    assert _out_matches_lock_of(project) == len(artifacts)
    assert key.read_bytes() == b"x" * key.stat().st_size  # left as found, for a human


def _out_matches_lock_of(project: Project) -> int:
    count = 0
    for entry in project.lock("chain")["instances"].values():
        for artifact in entry["artifacts"]:
            path = project.root / "pipelines" / artifact["path"]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact["sha256"], path
            count += 1
    return count


def test_checkout_in_a_fresh_clone_restores_out_from_the_remote(
        ready: tuple[Project, RunningEmulator], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Promise: `civflow checkout` makes out/ match the lockfile from the local store or,
    for what this machine never had, the team's remote; nothing is submitted."""
    project, emulator = ready
    share = tmp_path / "share"
    (project.root / "civflow.toml").write_text(f'[remote]\nurl = "{share.as_uri()}"\n',
                                               encoding="utf-8")
    project.write("chain", CHAIN)
    assert project.run("chain", "--push").code == 0
    _git(project.root, "init", "-q")
    (project.root / ".gitignore").write_text(".civflow/\nout/\n", encoding="utf-8")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-qm", "chain")
    clone = _clone(tmp_path, project.root, "fresh", capsys)
    before = (created(emulator), _blob_requests(emulator))
    done = clone.cli("checkout")
    assert done.code == 0, done.text
    assert "pulled from the remote" in done.out
    assert _out_matches_lock(clone) == 5
    assert (created(emulator), _blob_requests(emulator)) == before
