"""The content-addressed object store: layout, idempotent adoption, links, verification."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from civflow.store.objects import ObjectStore, hash_file


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_import_places_a_read_only_object_by_hash(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    source = tmp_path / "in.png"
    source.write_bytes(b"pixels")
    sha = store.import_file(source)
    assert sha == _sha(b"pixels")
    path = store.path_for(sha)
    assert path == tmp_path / "objects" / "sha256" / sha[:2] / sha[2:]
    assert path.read_bytes() == b"pixels"
    assert not stat.S_IMODE(path.stat().st_mode) & 0o222
    assert store.has(sha) and store.verify(sha)
    assert source.read_bytes() == b"pixels"  # importing copies, the source stays


def test_adopt_is_idempotent(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    sha = _sha(b"data")
    for _ in range(2):
        tmp = tmp_path / "download.part"
        tmp.write_bytes(b"data")
        assert store.adopt(tmp, sha) == store.path_for(sha)
        assert not tmp.exists()
    assert store.path_for(sha).read_bytes() == b"data"


def test_verify_detects_corruption_and_absence(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    source = tmp_path / "x"
    source.write_bytes(b"original")
    sha = store.import_file(source)
    path = store.path_for(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"tampered")
    assert store.has(sha)
    assert not store.verify(sha)
    assert not store.verify(_sha(b"never stored"))


def test_materialize_replaces_an_existing_destination(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    first, second = tmp_path / "1", tmp_path / "2"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    sha1, sha2 = store.import_file(first), store.import_file(second)
    dest = tmp_path / "out" / "hero" / "0.png"
    store.materialize(sha1, dest)
    assert dest.read_bytes() == b"one"
    store.materialize(sha2, dest)
    assert dest.read_bytes() == b"two"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["0.png"]


def test_editing_an_output_never_changes_the_stored_object(tmp_path: Path) -> None:
    """Trust issue case 1: out/ files were hard links, so an edit corrupted the store."""
    store = ObjectStore(tmp_path / "objects")
    source = tmp_path / "src"
    source.write_bytes(b"original pixels")
    sha = store.import_file(source)
    dest = tmp_path / "out" / "hero" / "0.png"
    store.link(sha, dest)  # the old name does the same as materialize now
    assert not os.path.samefile(dest, store.path_for(sha))
    assert stat.S_IMODE(dest.stat().st_mode) & stat.S_IWUSR  # the copy is editable
    with open(dest, "r+b") as handle:  # edit in place, as an image editor would
        handle.write(b"EDITED")
    assert store.verify(sha)
    assert store.path_for(sha).read_bytes() == b"original pixels"
    assert not stat.S_IMODE(store.path_for(sha).stat().st_mode) & 0o222


def test_materialize_replaces_an_old_hard_link_without_touching_the_object(
        tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    source = tmp_path / "src"
    source.write_bytes(b"bytes")
    sha = store.import_file(source)
    dest = tmp_path / "out" / "0.png"
    dest.parent.mkdir()
    os.link(store.path_for(sha), dest)  # what earlier versions of civflow left behind
    store.materialize(sha, dest)
    assert not os.path.samefile(dest, store.path_for(sha))
    assert store.path_for(sha).stat().st_nlink == 1


def test_check_quarantines_a_corrupt_object_and_keeps_its_bytes(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "objects")
    source = tmp_path / "src"
    source.write_bytes(b"good")
    sha = store.import_file(source)
    assert store.check(sha) == "ok"
    path = store.path_for(sha)
    os.chmod(path, 0o644)
    path.write_bytes(b"rotten")
    assert store.check(sha) == "corrupt"
    assert not path.exists()
    moved = list((tmp_path / "objects" / "corrupt").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith(sha)
    assert moved[0].read_bytes() == b"rotten"  # kept for inspection, never deleted
    assert store.check(sha) == "missing"
    assert store.import_file(source) == sha and store.check(sha) == "ok"


def test_bad_digest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        ObjectStore(tmp_path).path_for("../../etc/passwd")


def test_hash_file_streams_large_files(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    path = tmp_path / "big"
    path.write_bytes(data)
    assert hash_file(path) == _sha(data)
