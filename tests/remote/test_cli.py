"""`civflow push` / `civflow pull` on the command line: what the lockfiles name travels,
out/ is restored, and a broken remote is one rendered error, never a traceback."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from civflow.remote import Remote, RemoteConfig
from civflow.store.objects import ObjectStore
from tests.remote.s3server import KEY_SECRET, credentials
from tests.remote.support import (
    clone,
    denying_server,
    make_project,
    run_cli,
    sha256_of,
    silent_server,
    write_config,
)


def test_push_then_pull_in_a_fresh_clone_restores_out_byte_for_byte(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Promise: a teammate's clone gets every out/ file the lockfile names, verified."""
    share = tmp_path / "share"
    share.mkdir()
    a, b = tmp_path / "a", tmp_path / "b"
    artifacts = make_project(a, count=5, url=share.as_uri())
    monkeypatch.chdir(a)
    code, out, err = run_cli(capsys, "push")
    assert code == 0, err
    assert "pushed 5 object(s)" in out and "0 already there" in out
    code, out, _ = run_cli(capsys, "push", "pipelines")
    assert code == 0 and "pushed 0 object(s)" in out and "5 already there" in out

    clone(a, b)
    monkeypatch.chdir(b)
    code, out, err = run_cli(capsys, "pull", "pipelines/p.yaml")
    assert code == 0, err
    assert "pulled 5 object(s)" in out and "p: 5 restored, 0 unchanged" in out
    for artifact in artifacts:
        restored = b / "pipelines" / artifact.path
        assert sha256_of(restored) == artifact.sha256
        assert ObjectStore(b / ".civflow" / "objects").verify(artifact.sha256)
    code, out, _ = run_cli(capsys, "pull")
    assert code == 0 and "pulled 0 object(s)" in out and "p: 0 restored, 5 unchanged" in out


def test_pull_of_objects_nobody_pushed_says_which_and_exits_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    share = tmp_path / "share"
    (share / "sha256").mkdir(parents=True)
    a, b = tmp_path / "a", tmp_path / "b"
    artifacts = make_project(a, count=2, url=share.as_uri())
    clone(a, b)
    monkeypatch.chdir(b)
    code, _, err = run_cli(capsys, "pull")
    assert code == 1
    assert f"not on the remote: {artifacts[0].sha256}" in err
    assert "not restored: shot[0]" in err
    assert "Traceback" not in err


def test_civflow_remote_in_the_environment_overrides_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    configured, chosen = tmp_path / "configured", tmp_path / "chosen"
    configured.mkdir()
    chosen.mkdir()
    a = tmp_path / "a"
    make_project(a, count=1, url=configured.as_uri())
    monkeypatch.chdir(a)
    monkeypatch.setenv("CIVFLOW_REMOTE", chosen.as_uri())
    code, out, _ = run_cli(capsys, "push")
    assert code == 0 and "pushed 1 object(s)" in out
    assert list((chosen / "sha256").rglob("*")) and not list(configured.rglob("*"))


def test_a_bad_config_file_is_a_located_error_on_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Promise: bad input is `file:line:col`, the line and a hint, never a traceback."""
    a = tmp_path / "a"
    make_project(a, count=1)
    write_config(a, (tmp_path / "share").as_uri(), extra="jobs = 0")
    monkeypatch.chdir(a)
    code, _, err = run_cli(capsys, "push")
    assert code == 2
    assert f"{a / 'civflow.toml'}:3:1: jobs must be a whole number from 1 to 256" in err
    assert "    jobs = 0" in err and "hint:" in err and "Traceback" not in err


def test_permission_denied_is_one_rendered_error_without_the_secret(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Promise: a 403 from the store -> `error: remote …: permission denied`, exit 1,
    and the secret key is printed nowhere."""
    credentials(monkeypatch, tmp_path)
    a = tmp_path / "a"
    monkeypatch.chdir(tmp_path)
    with denying_server() as endpoint:
        make_project(a, count=2, url="s3://team/civflow", options={"endpoint_url": endpoint})
        monkeypatch.chdir(a)
        code, out, err = run_cli(capsys, "push")
    assert code == 1
    assert err.startswith("error: remote s3://team/civflow: permission denied"), err
    assert "hint:" in err and KEY_SECRET not in out + err and "Traceback" not in err


def test_a_pull_from_a_remote_that_never_answers_is_given_up_at_its_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Promise: every wait is bounded; a silent endpoint is one rendered error naming the
    timeout and the setting that changes it, never a hang or a traceback."""
    credentials(monkeypatch, tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    with silent_server() as endpoint:
        make_project(a, count=2, url="s3://team/civflow", options={"endpoint_url": endpoint})
        write_config(a, "s3://team/civflow", {"endpoint_url": endpoint}, extra="timeout = 1")
        clone(a, b)
        monkeypatch.chdir(b)
        code, _, err = run_cli(capsys, "pull")
    assert code == 1, err
    assert err.startswith("error: remote s3://team/civflow: no answer within 1 s while "
                          "listing it"), err
    assert "[remote] timeout" in err and "Traceback" not in err


def test_has_many_is_right_for_few_and_for_many_prefixes(tmp_path: Path) -> None:
    """Promise: the planner's question (which objects are on the remote) gets the same
    answer from per-prefix listings (few objects) and from one listing of the tree."""
    rng = random.Random(11)
    store = ObjectStore(tmp_path / "objects")
    shas = []
    for i in range(40):
        path = tmp_path / f"f{i}"
        path.write_bytes(rng.randbytes(300))
        shas.append(store.import_file(path))
    share = tmp_path / "share"
    share.mkdir()
    remote = Remote(RemoteConfig(url=share.as_uri()))
    remote.push_from(store, shas[:25])
    absent = "f" * 64
    assert remote.has_many([shas[0], shas[30], absent]) == {shas[0]}
    assert remote.has_many([*shas, absent]) == set(shas[:25])
    assert remote.has_many([]) == set()
