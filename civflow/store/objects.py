"""A content-addressed object store: each file lives once, named by the sha256 of its bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from civflow.errors import FileAccessError
from civflow.store.atomic import fsync_dir

__all__ = ["ObjectStore", "hash_file"]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1024 * 1024
_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


def hash_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in chunks so videos do not fill memory."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
    return digest.hexdigest()


def _check(sha256: str) -> str:
    if not _SHA256.match(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return sha256


class ObjectStore:
    """Objects under `root/sha256/ab/cdef…`, read-only once adopted.

    `root` is usually `<project>/.civflow/objects`. Output folders get hard links to
    the objects (a copy where links are impossible), so a file is stored once however
    many runs produced it.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ObjectStore({str(self.root)!r})"

    def path_for(self, sha256: str) -> Path:
        sha256 = _check(sha256)
        return self.root / "sha256" / sha256[:2] / sha256[2:]

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def verify(self, sha256: str) -> bool:
        """Re-hash the stored object; False when it is missing or its bytes changed."""
        path = self.path_for(sha256)
        if not path.is_file():
            return False
        return hash_file(path) == sha256

    def adopt(self, tmp_path: Path, sha256: str) -> Path:
        """Move a file whose hash the caller computed into the store; idempotent.

        When the object already exists the temp file is simply removed, so adopting the
        same download twice (two runs, two instances) is harmless.
        """
        target = self.path_for(sha256)
        try:
            if target.is_file():
                Path(tmp_path).unlink(missing_ok=True)
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            os.chmod(tmp_path, _READ_ONLY)
            os.replace(tmp_path, target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise FileAccessError(path=str(target), reason=exc.strerror or str(exc)) from exc
        return target

    def import_file(self, path: Path) -> str:
        """Copy a local file into the store (e.g. an input image) and return its sha256."""
        sha256 = hash_file(path)
        if self.has(sha256):
            return sha256
        tmp: str | None = None
        try:
            tmp_dir = self.root / "tmp"
            tmp_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
            with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            self.adopt(Path(tmp), sha256)
            tmp = None
        except OSError as exc:
            raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return sha256

    def link(self, sha256: str, dest: Path) -> None:
        """Make `dest` show the object: a hard link, or a copy across filesystems.

        An existing `dest` is replaced atomically (link to a temp name, then rename), so
        an output folder never holds a half-written file.
        """
        source = self.path_for(sha256)
        dest = Path(dest)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.link")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                # Another filesystem, or links not supported: a plain copy will do.
                shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise FileAccessError(path=str(dest), reason=exc.strerror or str(exc)) from exc
