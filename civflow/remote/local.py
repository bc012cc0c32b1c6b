"""A `file://` remote (a shared folder, a mount) with the standard library only.

`LocalFolder` is the part of fsspec's filesystem interface that `civflow.remote.Remote`
uses (find, isdir, exists, makedirs, pipe_file, put_file, cat_file, get_file, mv,
rm_file, invalidate_cache), so the base install pushes to and pulls from a folder
without the `s3` extra. Promises:

- Every path stays under the remote's root. Paths come from object names, which come
  from lockfiles other people wrote: a key with a `..` part, an absolute key outside the
  root, or one that resolves (through a symlink planted in the shared folder) outside it
  is refused with `UnsafePath` before anything is read or written.
- A write is never visible half-done: bytes go to a temp file beside the target
  (`.<name>.<random>.tmp`, created exclusively, so a planted symlink there is never
  followed), are fsync'd, and `os.replace` puts them in place.
- Listings report regular files only: a symlink, a temp file or a folder is never an
  object.

Errors are the OS's own (`OSError` and its subclasses); `Remote` classifies them like the
storage libraries' (permission denied, not found, timed out).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from civflow.errors import UnsafePath
from civflow.store.atomic import default_file_mode, fsync_dir

__all__ = ["LocalFolder", "folder_of"]

_CHUNK = 1024 * 1024


def folder_of(url: str) -> Path:
    """The absolute folder a `file://` URL (or a plain path) names.

    `file:///mnt/team` and `file://localhost/mnt/team` are `/mnt/team`; percent-escapes
    are decoded (`Path.as_uri()` writes a space as `%20`). A `file://host/…` URL names
    another machine, which a folder cannot reach: ValueError.
    """
    if "://" not in url:
        return Path(os.path.abspath(os.path.expanduser(url)))
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"a file:// URL names a folder on this machine, not on "
                         f"'{parts.netloc}' (write file:///absolute/path)")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise ValueError("a file:// URL needs an absolute path (file:///absolute/path)")
    return Path(os.path.abspath(path))


class LocalFolder:
    """Objects in a folder on this machine, every path confined under `root`.

    Keys are what `Remote` forms, `<root>/sha256/ab/cdef…`, or paths relative to the
    root. Safe to use from several threads (no state but the root).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self._prefix = str(self.root).rstrip(os.sep) + os.sep

    def __repr__(self) -> str:
        return f"LocalFolder({str(self.root)!r})"

    # -- confinement -----------------------------------------------------------------

    def path(self, key: str, *, write: bool = False) -> Path:
        """The file or folder `key` names, after checking that it lies under the root.

        Lexically first (no `..`, no absolute key elsewhere, no NUL), then with every
        symlink resolved: the real path must be the root's real path or inside it. For
        a `write` the last part is not resolved: writes replace it, never follow it.
        """
        action = "write" if write else "read"
        text = str(key)
        if "\0" in text:
            raise UnsafePath(path=text.replace("\0", "\\0"), base=str(self.root),
                             action=action)
        if os.path.isabs(text):
            if text.rstrip("/") == str(self.root):
                rel = ""
            elif text.startswith(self._prefix):
                rel = text[len(self._prefix):]
            else:
                raise UnsafePath(path=text, base=str(self.root), action=action)
        else:
            rel = text
        parts = [part for part in rel.replace("\\", "/").split("/") if part not in ("", ".")]
        if ".." in parts:
            raise UnsafePath(path=text, base=str(self.root), action=action)
        target = self.root.joinpath(*parts)
        real_root = os.path.realpath(self.root)
        # A write replaces (os.replace) or removes the last part itself, never what a
        # link there points to: only the folders on the way must stay inside.
        real = os.path.realpath(target.parent if write and parts else target)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            raise UnsafePath(path=text, base=str(self.root), action=action)
        return target

    # -- the fsspec methods Remote calls ---------------------------------------------

    def invalidate_cache(self, path: str | None = None) -> None:
        """Nothing is cached: every listing reads the folder."""

    def exists(self, path: str) -> bool:
        return self.path(path).exists()

    def isdir(self, path: str) -> bool:
        return self.path(path).is_dir()

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        os.makedirs(self.path(path, write=True), exist_ok=exist_ok)

    def find(self, path: str, detail: bool = False) -> dict[str, dict[str, Any]] | list[str]:
        """Every regular file under `path` (symlinks are not followed nor listed), as
        `{key: {"name", "type": "file", "size"}}` with `detail`, else a sorted list."""
        top = self.path(path)
        found: dict[str, dict[str, Any]] = {}
        for folder, _, files in os.walk(top, followlinks=False):
            for name in files:
                full = os.path.join(folder, name)
                try:
                    info = os.lstat(full)
                except FileNotFoundError:
                    continue  # removed since the folder was read
                if stat.S_ISREG(info.st_mode):
                    found[full] = {"name": full, "type": "file", "size": info.st_size}
        return found if detail else sorted(found)

    def cat_file(self, path: str) -> bytes:
        with open(self.path(path), "rb") as handle:
            return handle.read()

    def get_file(self, rpath: str, lpath: str) -> None:
        """Copy the remote file `rpath` to the local path `lpath` (the caller's own)."""
        with open(self.path(rpath), "rb") as src, open(lpath, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)

    def pipe_file(self, path: str, data: bytes) -> None:
        """Write `data` at `path` atomically (temp file beside it, fsync, rename)."""
        self._replace(path, lambda out: out.write(data))

    def put_file(self, lpath: str, rpath: str) -> None:
        """Copy the local file `lpath` to `rpath` atomically, streaming it."""
        with open(lpath, "rb") as src:
            self._replace(rpath, lambda out: shutil.copyfileobj(src, out, _CHUNK))

    def mv(self, path1: str, path2: str) -> None:
        """Rename within the root; atomic where both are on one filesystem (they are:
        one remote folder)."""
        source, target = self.path(path1, write=True), self.path(path2, write=True)
        os.replace(source, target)
        fsync_dir(target.parent)

    def rm_file(self, path: str) -> None:
        os.unlink(self.path(path, write=True))

    # -- helpers ---------------------------------------------------------------------

    def _replace(self, path: str, fill: Any) -> None:
        target = self.path(path, write=True)
        tmp = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
        # O_EXCL: a name someone planted (a symlink, a file) is never opened or followed.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(tmp, flags, default_file_mode())
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(target.parent)
