"""`Remote`: content-addressed objects on a real S3 server and on file://, never partial,
never adopted unverified, with clear errors for the bad states.

Each test runs against both kinds of remote (`kind`): moto's S3 server on 127.0.0.1
reached through s3fs, and a local folder reached through fsspec's file:// filesystem.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import pytest

from civflow.errors import RemoteAccessDenied, RemoteUnreachable
from civflow.remote import Remote, RemoteConfig
from civflow.store.objects import ObjectStore
from tests.remote.s3server import KEY_SECRET, credentials


def _objects(store: ObjectStore, tmp: Path, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    tmp.mkdir(parents=True, exist_ok=True)
    shas = []
    for i in range(count):
        path = tmp / f"file-{i}"
        path.write_bytes(rng.randbytes(rng.randrange(1, 40_000)))
        shas.append(store.import_file(path))
    return shas


class Where:
    """One remote under test and a way to look at (and damage) its raw keys."""

    def __init__(self, remote: Remote, fs: Any, base: str) -> None:
        self.remote, self.fs, self.base = remote, fs, base

    def put(self, key: str, data: bytes) -> None:
        """Write raw bytes at `key`, as another tool (or damage) would."""
        self.fs.makedirs(key.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(key, data)

    def keys(self) -> list[str]:
        self.fs.invalidate_cache()
        try:
            return sorted(str(k) for k in self.fs.find(self.base))
        except FileNotFoundError:
            return []


@pytest.fixture(params=["s3", "file"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Where:
    if request.param == "s3":
        bucket, fs = request.getfixturevalue("s3_bucket")
        endpoint = request.getfixturevalue("s3_endpoint")
        remote = Remote(RemoteConfig(url=f"s3://{bucket}/team",
                                     options={"endpoint_url": endpoint}, jobs=8))
        return Where(remote, fs, f"{bucket}/team")
    import fsspec

    folder = tmp_path / "remote"
    remote = Remote(RemoteConfig(url=folder.as_uri(), jobs=8))
    return Where(remote, fsspec.filesystem("file"), str(folder))


def test_push_lays_objects_out_by_hash_and_a_second_push_skips_them_all(
        where: Where, tmp_path: Path) -> None:
    """Promise: content-addressed layout sha256/ab/cdef…; skips decided by listing."""
    store = ObjectStore(tmp_path / "a")
    shas = _objects(store, tmp_path / "src", 30, seed=1)
    first = where.remote.push_from(store, shas)
    assert sorted(first.done) == sorted(shas) and first.ok
    keys = where.keys()
    assert keys == sorted(f"{where.base}/sha256/{s[:2]}/{s[2:]}" for s in shas)
    again = where.remote.push_from(store, shas)
    assert again.done == [] and sorted(again.skipped) == sorted(shas)
    assert where.remote.has_many([*shas, "0" * 64]) == set(shas)


def test_pull_verifies_and_adopts_into_a_fresh_store(where: Where, tmp_path: Path) -> None:
    """Promise: pulled objects enter the store whole, read-only, with the right bytes."""
    store = ObjectStore(tmp_path / "a")
    shas = _objects(store, tmp_path / "src", 12, seed=2)
    where.remote.push_from(store, shas[:10])
    fresh = ObjectStore(tmp_path / "b")
    pulled = where.remote.pull_into(fresh, shas)
    assert sorted(pulled.done) == sorted(shas[:10])
    assert sorted(pulled.missing) == sorted(shas[10:])
    for sha in shas[:10]:
        path = fresh.path_for(sha)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
        assert not path.stat().st_mode & 0o222
    assert not list((tmp_path / "b" / "tmp").glob("*"))
    assert where.remote.pull_into(fresh, shas[:10]).skipped == sorted(shas[:10])


def test_a_remote_object_whose_bytes_do_not_match_is_reported_never_adopted(
        where: Where, tmp_path: Path) -> None:
    """Promise: a hash mismatch is reported, not trusted, and not overwritten silently."""
    store = ObjectStore(tmp_path / "a")
    shas = _objects(store, tmp_path / "src", 3, seed=3)
    where.remote.push_from(store, shas)
    bad = shas[0]
    key = where.remote.key_for(bad)
    original = where.fs.cat_file(key)
    where.fs.pipe_file(key, bytes([original[0] ^ 1]) + original[1:])  # same size, other bytes
    fresh = ObjectStore(tmp_path / "b")
    pulled = where.remote.pull_into(fresh, shas)
    assert pulled.corrupt == [bad] and not fresh.has(bad)
    assert sorted(pulled.done) == sorted(shas[1:])
    assert where.fs.cat_file(key) != original  # left as found, for a human to look at
    assert not list((tmp_path / "b" / "tmp").glob("*"))


def test_a_remote_object_of_the_wrong_size_is_replaced_by_push(
        where: Where, tmp_path: Path) -> None:
    """Promise: a truncated remote object (size differs) is not taken as present."""
    store = ObjectStore(tmp_path / "a")
    shas = _objects(store, tmp_path / "src", 2, seed=4)
    where.remote.push_from(store, shas)
    key = where.remote.key_for(shas[0])
    where.fs.pipe_file(key, b"truncated")
    pushed = where.remote.push_from(store, shas)
    assert pushed.repaired == [shas[0]] and pushed.done == [shas[0]]
    assert hashlib.sha256(where.fs.cat_file(key)).hexdigest() == shas[0]


def test_a_corrupt_local_object_is_not_pushed(where: Where, tmp_path: Path) -> None:
    """Promise: push re-hashes local objects; damage on this machine never spreads."""
    store = ObjectStore(tmp_path / "a")
    shas = _objects(store, tmp_path / "src", 2, seed=5)
    path = store.path_for(shas[0])
    path.chmod(0o644)
    path.write_bytes(b"x" * path.stat().st_size)
    pushed = where.remote.push_from(store, shas)
    assert pushed.corrupt == [shas[0]] and pushed.done == [shas[1]]
    assert where.remote.has_many(shas) == {shas[1]}


def test_partial_uploads_and_temp_files_are_never_listed_as_objects(
        where: Where, tmp_path: Path) -> None:
    """Promise: what a killed transfer leaves behind (temp parts) is never an object."""
    store = ObjectStore(tmp_path / "a")
    shas = _objects(store, tmp_path / "src", 1, seed=6)
    sha = shas[0]
    where.put(f"{where.base}/tmp/{sha}.0123456789abcdef.part", b"half")
    where.put(f"{where.base}/sha256/{sha[:2]}/{sha[2:]}.part", b"half")
    assert where.remote.has_many(shas) == set()
    assert where.remote.push_from(store, shas).done == [sha]


def test_an_unreachable_server_is_a_clear_error(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: unreachable remote -> RemoteUnreachable naming the URL, no traceback."""
    credentials(monkeypatch, tmp_path)
    remote = Remote(RemoteConfig(
        url="s3://nowhere/team",
        options={"endpoint_url": "http://127.0.0.1:9",
                 "config_kwargs": {"connect_timeout": 1, "retries": {"max_attempts": 1}}}))
    with pytest.raises(RemoteUnreachable) as caught:
        remote.has_many(["a" * 64])
    assert "s3://nowhere/team" in str(caught.value)
    assert caught.value.hint


def test_a_missing_bucket_or_folder_is_a_clear_error(where: Where, tmp_path: Path) -> None:
    """Promise: pushing to a bucket that does not exist says so (folders are created)."""
    store = ObjectStore(tmp_path / "a")
    shas = _objects(store, tmp_path / "src", 1, seed=7)
    config = where.remote.config
    if where.remote.atomic_writes:
        missing = Remote(RemoteConfig(url="s3://no-such-bucket-here/x", options=config.options))
        with pytest.raises(RemoteUnreachable, match="no such bucket"):
            missing.push_from(store, shas)
        with pytest.raises(RemoteUnreachable):
            missing.pull_into(ObjectStore(tmp_path / "b"), shas)
    else:
        missing = Remote(RemoteConfig(url=(tmp_path / "absent").as_uri()))
        with pytest.raises(RemoteUnreachable):
            missing.pull_into(ObjectStore(tmp_path / "b"), shas)
        assert missing.push_from(store, shas).done == shas


def test_missing_credentials_are_a_clear_error_that_prints_no_secret(
        s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: no credentials -> RemoteAccessDenied saying where they are looked for."""
    credentials(monkeypatch, tmp_path, present=False)
    remote = Remote(RemoteConfig(url="s3://any-bucket/team",
                                 options={"endpoint_url": s3_endpoint}))
    with pytest.raises(RemoteAccessDenied) as caught:
        remote.has_many(["b" * 64])
    text = f"{caught.value} {caught.value.hint}"
    assert "AWS_ACCESS_KEY_ID" in text and KEY_SECRET not in text


def test_bad_object_names_are_refused_before_any_path_is_formed(where: Where) -> None:
    """Promise: nothing from a lockfile forms a key outside sha256/ on the remote."""
    for name in ["../../etc/passwd", "A" * 64, "ab", "0" * 63 + "/"]:
        with pytest.raises(ValueError):
            where.remote.key_for(name)
