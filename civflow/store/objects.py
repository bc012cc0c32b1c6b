"""A content-addressed object store: each file lives once, named by the sha256 of its bytes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from civflow.errors import FileAccessError

if sys.platform != "win32":
    import fcntl
from civflow.store.atomic import default_file_mode, fsync_dir

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

    `root` is usually `<project>/.civflow/objects`. Output folders get independent
    copies of the objects (`materialize`: a reflink where the filesystem supports it),
    so editing an output never touches the stored bytes and the store can restore it.
    A corrupt object is moved to `root/corrupt/` (`quarantine`), never deleted.
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

    def materialize(self, sha256: str, dest: Path) -> None:
        """Make `dest` an independent copy of the object (a reflink where the filesystem
        can share blocks copy-on-write, a plain copy elsewhere; never a hard link).

        Editing `dest` afterwards can never change the stored object. An existing `dest`
        is replaced atomically (copy to a temp name beside it, fsync, rename), so an
        output folder never holds a half-written file. `dest` gets the usual mode of a
        new file, so it can be edited; the object stays read-only. The caller checks
        that `dest` lies where it may write (`civflow.names.contained`).
        """
        source = self.path_for(sha256)
        dest = Path(dest)
        tmp: str | None = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            if hasattr(os, "fchmod"):
                os.fchmod(fd, default_file_mode())
            with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
                if not _reflink(src.fileno(), out.fileno()):
                    shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
            tmp = None
            fsync_dir(dest.parent)
        except OSError as exc:
            raise FileAccessError(path=str(dest), reason=exc.strerror or str(exc)) from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def link(self, sha256: str, dest: Path) -> None:
        """Deprecated name of `materialize`: `dest` is a copy now, never a hard link."""
        self.materialize(sha256, dest)

    def quarantine(self, sha256: str) -> Path | None:
        """Move a (corrupt) object aside to `root/corrupt/<sha256>.<random>`; its path there.

        The bytes are kept for inspection, never deleted; the object name is free again
        so a good copy can be adopted. None when there was no object to move.
        """
        source = self.path_for(sha256)
        folder = self.root / "corrupt"
        target = folder / f"{sha256}.{secrets.token_hex(4)}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            fsync_dir(folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise FileAccessError(path=str(source), reason=exc.strerror or str(exc)) from exc
        return target

    def check(self, sha256: str) -> str:
        """Re-hash the object: "ok", "missing", or "corrupt" (then it is quarantined)."""
        path = self.path_for(sha256)
        if not path.is_file():
            return "missing"
        if hash_file(path) == sha256:
            return "ok"
        self.quarantine(sha256)
        return "corrupt"


# Linux FICLONE (_IOW(0x94, 9, int)); fcntl only names it from Python 3.12 on.
_FICLONE = 0x40049409


def _reflink(src_fd: int, dst_fd: int) -> bool:
    """Share the source's blocks copy-on-write (btrfs, XFS, bcachefs); False where the
    platform or filesystem cannot, and the caller copies instead."""
    if sys.platform != "linux":
        return False
    try:
        fcntl.ioctl(dst_fd, _FICLONE, src_fd)
    except OSError:
        return False
    return True
