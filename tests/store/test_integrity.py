"""Artifact health: a stat-cached hash check of out/ and the store, and local repair.

Guards trust issue case 1: an edited or deleted output, or a rotten store object, is
noticed (never "cached" on faith) and repaired from local bytes when they exist.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from civflow.errors import UnsafePath
from civflow.store.integrity import (
    ArtifactState,
    StatCache,
    check_artifact,
    restore_artifact,
)
from civflow.store.lockfile import Artifact
from civflow.store.objects import ObjectStore, hash_file

CONTENT = b"\x89PNG pretend pixels"


def _setup(tmp_path: Path) -> tuple[ObjectStore, Artifact, Path, StatCache]:
    """A project with one artifact in the store and in out/, as a run leaves it."""
    store = ObjectStore(tmp_path / ".civflow" / "objects")
    src = tmp_path / "download"
    src.write_bytes(CONTENT)
    sha = store.import_file(src)
    out = tmp_path / "out" / "p" / "hero" / "0.png"
    store.materialize(sha, out)
    artifact = Artifact(blob_id="B1.png", sha256=sha, size=len(CONTENT),
                        media_type="image/png", width=None, height=None,
                        path="out/p/hero/0.png")
    return store, artifact, out, StatCache.for_store(store)


def test_an_untouched_artifact_is_ok(tmp_path: Path) -> None:
    store, artifact, _, cache = _setup(tmp_path)
    assert check_artifact(artifact, tmp_path, store, cache).state is ArtifactState.OK


def test_an_edited_output_is_restored_and_the_edit_kept_in_the_store(tmp_path: Path) -> None:
    store, artifact, out, cache = _setup(tmp_path)
    out.write_bytes(b"my retouched version")
    status = check_artifact(artifact, tmp_path, store, cache)
    assert status.state is ArtifactState.OUT_MISSING_OR_MODIFIED and status.restorable
    assert status.detail == "out/p/hero/0.png is modified; the store has its bytes"
    fixed = restore_artifact(status, store, cache, out_dir=tmp_path / "out")
    assert fixed.ok and out.read_bytes() == CONTENT
    edited = hashlib.sha256(b"my retouched version").hexdigest()
    assert store.path_for(edited).read_bytes() == b"my retouched version"
    assert edited in fixed.detail


def test_a_deleted_output_is_restored(tmp_path: Path) -> None:
    store, artifact, out, cache = _setup(tmp_path)
    out.unlink()
    status = check_artifact(artifact, tmp_path, store, cache)
    assert status.state is ArtifactState.OUT_MISSING_OR_MODIFIED
    assert restore_artifact(status, store, cache, out_dir=tmp_path / "out").ok
    assert out.read_bytes() == CONTENT


def test_a_lost_store_is_refilled_from_an_intact_output(tmp_path: Path) -> None:
    store, artifact, _, cache = _setup(tmp_path)
    object_path = store.path_for(artifact.sha256)
    os.chmod(object_path, 0o644)
    object_path.write_bytes(b"bit rot!!")
    status = check_artifact(artifact, tmp_path, store, cache)
    assert status.state is ArtifactState.STORE_MISSING_OUT_OK and status.restorable
    assert restore_artifact(status, store, cache, out_dir=tmp_path / "out").ok
    assert store.verify(artifact.sha256)
    corrupt = list((store.root / "corrupt").iterdir())
    assert [p.read_bytes() for p in corrupt] == [b"bit rot!!"]


def test_both_copies_gone_needs_a_download(tmp_path: Path) -> None:
    store, artifact, out, cache = _setup(tmp_path)
    out.unlink()
    os.chmod(store.path_for(artifact.sha256), 0o644)
    store.path_for(artifact.sha256).unlink()
    status = check_artifact(artifact, tmp_path, store, cache)
    assert status.state is ArtifactState.STORE_MISSING_OR_CORRUPT and status.needs_download
    assert "blob B1.png must be downloaded again" in status.detail
    assert restore_artifact(status, store, cache, out_dir=tmp_path / "out") == status


def test_a_lockfile_path_outside_out_is_never_written(tmp_path: Path) -> None:
    store, artifact, _, cache = _setup(tmp_path)
    hostile = Artifact(**{**artifact.__dict__, "path": "../victim.png"})
    status = check_artifact(hostile, tmp_path / "sub", store, cache)
    assert status.state is ArtifactState.OUT_MISSING_OR_MODIFIED
    with pytest.raises(UnsafePath):
        restore_artifact(status, store, cache, out_dir=tmp_path / "out")
    assert not (tmp_path / "victim.png").exists()


def test_the_cache_skips_hashing_unchanged_files_and_rehashes_moved_ones(
        tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"one")
    cache = StatCache(tmp_path / "statcache.json")
    assert cache.sha256_of(path) == hash_file(path)
    cache.save()
    # A stale entry with the right stat is trusted: proof that no hash was computed.
    reloaded = StatCache.load(tmp_path / "statcache.json")
    data = json.loads((tmp_path / "statcache.json").read_text())
    assert data["schema"] == 1 and list(data["entries"]) == [os.path.abspath(path)]
    reloaded.record(path, "0" * 64)
    assert reloaded.sha256_of(path) == "0" * 64
    # Same size, new mtime: the stat moved, so the file is hashed again.
    path.write_bytes(b"two")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert reloaded.sha256_of(path) == hashlib.sha256(b"two").hexdigest()
    path.unlink()
    assert reloaded.sha256_of(path) is None


def test_an_edit_that_restores_the_mtime_is_still_seen(tmp_path: Path) -> None:
    """Same size, mtime set back by hand: the ctime still moved, so it is re-hashed."""
    store, artifact, out, cache = _setup(tmp_path)
    assert check_artifact(artifact, tmp_path, store, cache).ok
    before = out.stat()
    out.write_bytes(b"X" * len(CONTENT))
    os.utime(out, ns=(before.st_atime_ns, before.st_mtime_ns))
    status = check_artifact(artifact, tmp_path, store, cache)
    assert status.state is ArtifactState.OUT_MISSING_OR_MODIFIED


def test_a_garbled_cache_file_is_an_empty_cache(tmp_path: Path) -> None:
    target = tmp_path / "statcache.json"
    for text in ("{", "[]", '{"schema": 1, "entries": {"/x": [1, 2, "no"]}}', "null"):
        target.write_text(text)
        assert len(StatCache.load(target)) == 0
