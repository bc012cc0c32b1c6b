"""Crash-safe file writes: a temp file in the same folder, fsync, rename, fsync the folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from civflow.errors import FileAccessError

__all__ = ["atomic_write_bytes", "atomic_write_text", "default_file_mode", "fsync_dir"]


def _default_mode() -> int:
    """0o666 less the umask: the mode `open()` would give a new file (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# Read once: os.umask can only be read by setting it, which is not thread-safe later on.
_DEFAULT_MODE = _default_mode()


def default_file_mode() -> int:
    """The mode a new file gets from `open()` (0o666 less the umask read at import)."""
    return _DEFAULT_MODE


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable; a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. Windows: directories cannot be opened, renames are durable enough
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename already happened
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that a reader (or a crash) sees the old or the new file,
    never a partial one."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.stat().st_mode & 0o7777  # keep the mode of the file replaced
        except FileNotFoundError:
            mode = _DEFAULT_MODE
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        if hasattr(os, "fchmod"):  # absent on Windows before 3.13, where modes barely apply
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        tmp = None
        fsync_dir(path.parent)
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text; newlines are written as given (no translation)."""
    atomic_write_bytes(path, text.encode("utf-8"))
