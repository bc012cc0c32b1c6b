"""`fetch_objects`: the public call that makes a lockfile's objects available without
running anything (what `report --base` uses), pulling from the project's remote."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from civflow.remote import Remote, RemoteConfig, fetch_objects
from civflow.store.objects import ObjectStore
from tests.remote.support import make_project, write_config


def test_objects_only_on_the_remote_are_pulled_verified_and_returned(tmp_path: Path) -> None:
    """Promise: fetch_objects pulls what the store lacks from the configured remote and
    returns a path in the local store for every object, each hashing to its name."""
    remote_dir = tmp_path / "remote"
    a = tmp_path / "a"
    artifacts = make_project(a, count=4, url=remote_dir.as_uri())
    shas = [x.sha256 for x in artifacts]
    Remote(RemoteConfig(url=remote_dir.as_uri())).push_from(
        ObjectStore(a / ".civflow" / "objects"), shas)
    b = tmp_path / "b"
    (b / ".git").mkdir(parents=True)
    write_config(b, remote_dir.as_uri())
    found = fetch_objects(b, shas)
    assert sorted(found) == sorted(shas) and sorted(found.pulled) == sorted(shas)
    for sha, path in found.items():
        assert path == b / ".civflow" / "objects" / "sha256" / sha[:2] / sha[2:]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    again = fetch_objects(b, shas)
    assert sorted(again) == sorted(shas) and again.pulled == []


def test_without_a_remote_only_local_objects_are_returned(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Promise: no remote configured -> no error; what is not here is listed missing,
    and strings that are not sha256 names never form a path."""
    monkeypatch.delenv("CIVFLOW_REMOTE", raising=False)
    artifacts = make_project(tmp_path, count=2)
    shas = [x.sha256 for x in artifacts]
    absent = "c" * 64
    found = fetch_objects(tmp_path, [*shas, absent, "../../etc/passwd"])
    assert sorted(found) == sorted(shas)
    assert sorted(found.missing) == sorted([absent, "../../etc/passwd"])


def test_a_remote_object_that_does_not_match_is_left_out(tmp_path: Path) -> None:
    """Promise: a remote object whose bytes differ from its name is reported in
    `.corrupt` and never enters the store."""
    remote_dir = tmp_path / "remote"
    a = tmp_path / "a"
    artifacts = make_project(a, count=2, url=remote_dir.as_uri())
    shas = [x.sha256 for x in artifacts]
    remote = Remote(RemoteConfig(url=remote_dir.as_uri()))
    remote.push_from(ObjectStore(a / ".civflow" / "objects"), shas)
    key = Path(remote.key_for(shas[0]))
    key.chmod(0o644)
    key.write_bytes(b"y" * key.stat().st_size)
    b = tmp_path / "b"
    (b / ".git").mkdir(parents=True)
    write_config(b, remote_dir.as_uri())
    found = fetch_objects(b, shas)
    assert list(found) == [shas[1]] and found.corrupt == [shas[0]]
    assert not ObjectStore(b / ".civflow" / "objects").has(shas[0])


def test_a_pipeline_file_stands_for_its_project(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: fetch_objects given a pipeline file uses the store `civflow run` used."""
    monkeypatch.delenv("CIVFLOW_REMOTE", raising=False)
    artifacts = make_project(tmp_path, count=1)
    sha = artifacts[0].sha256
    found = fetch_objects(tmp_path / "pipelines" / "p.yaml", [sha])
    assert found == {sha: tmp_path / ".civflow" / "objects" / "sha256" / sha[:2] / sha[2:]}
