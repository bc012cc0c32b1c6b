"""One run of a pipeline at a time, and one pipeline file per pipeline name.

Two runs of one pipeline at once would each settle the other's journal and race on
the lockfile. The lock is an OS advisory lock (`flock`) on
`.civflow/locks/<name>.lock`: the kernel releases it when its holder dies, so a lock
left by a crashed or `kill -9`ed run is simply free, never stale. The file's text
names the holder (pid, host, start time) for the error message.

Two pipeline files with the same `name:` would share outputs, journals and seeds;
`.civflow/locks/<name>.owner` records which file claimed the name.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from civflow.errors import CivflowError, FileAccessError, PipelineInvalid, RunLocked
from civflow.loading.model import PipelineSpec
from civflow.store.atomic import atomic_write_text

__all__ = [
    "RunLock",
    "acquire_run_lock",
    "run_lock",
    "try_run_lock",
    "wait_for_run_lock",
]

_POLL = 0.5


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return (f"pid {int(info['pid'])} on {str(info['host'])[:100]}, "
                f"started {str(info['started'])[:40]}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _claim_name(spec: PipelineSpec, root: Path, folder: Path) -> None:
    """Refuse a second pipeline file that uses a name another existing file still uses."""
    owner = folder / f"{spec.name}.owner"
    me = os.path.relpath(spec.path.resolve(), root)
    try:
        other = json.loads(owner.read_text(encoding="utf-8")).get("file")
    except (OSError, ValueError, AttributeError):
        other = None
    if isinstance(other, str) and other != me:
        other_path = root / other
        if other_path.is_file() and _declares(other_path, spec.name):
            raise PipelineInvalid([spec.doc.diagnostic(
                f"pipeline name '{spec.name}' is already used by {other}; two pipelines "
                "with one name would overwrite each other's outputs and lockfile entries",
                ("name",), hint=f"rename one of them ({me} or {other})")])
    if other != me:
        atomic_write_text(owner, json.dumps({"file": me}) + "\n")


def _declares(path: Path, name: str) -> bool:
    from civflow.loading import read_source

    try:
        return bool(read_source(path).data.get("name") == name)
    except CivflowError:  # an unreadable or broken file claims nothing
        return False


class RunLock:
    """The held lock of one pipeline; `release()` (or closing the process) frees it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def try_run_lock(spec: PipelineSpec, root: Path) -> RunLock | str:
    """Take the pipeline's run lock if it is free, without waiting: the held lock, or
    the text naming its holder when another run has it."""
    folder = root / ".civflow" / "locks"
    path = folder / f"{spec.name}.lock"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
    held = RunLock(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held.release()
            return _holder(path)
        _claim_name(spec, root, folder)
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "file": os.path.relpath(spec.path.resolve(), root)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except BaseException:
        held.release()
        raise
    return held


def _busy(spec: PipelineSpec, holder: str, *, wait: bool,
          on_wait: Callable[[str], None] | None, told: bool) -> bool:
    """After an attempt found the lock held: RunLocked unless waiting; the holder is
    told of once. Returns whether it has been."""
    if not wait:
        raise RunLocked(pipeline=spec.name, holder=holder)
    if not told and on_wait is not None:
        on_wait(holder)
    return told or on_wait is not None


def acquire_run_lock(spec: PipelineSpec, root: Path, *, wait: bool = False,
                     on_wait: Callable[[str], None] | None = None) -> RunLock:
    """Take the pipeline's run lock; RunLocked when busy and not `wait` (then it polls,
    blocking the calling thread: inside an event loop use `wait_for_run_lock`)."""
    told = False
    while True:
        got = try_run_lock(spec, root)
        if isinstance(got, RunLock):
            return got
        told = _busy(spec, got, wait=wait, on_wait=on_wait, told=told)
        time.sleep(_POLL)


async def wait_for_run_lock(spec: PipelineSpec, root: Path, *, wait: bool = False,
                            on_wait: Callable[[str], None] | None = None) -> RunLock:
    """`acquire_run_lock` for an event loop: each attempt is a short non-blocking call
    in a worker thread and the wait between attempts is the loop's, so Ctrl-C (a
    cancel) ends the wait at once instead of when the other run lets go."""
    told = False
    while True:
        attempt = asyncio.ensure_future(asyncio.to_thread(try_run_lock, spec, root))
        try:
            got = await asyncio.shield(attempt)
        except asyncio.CancelledError:
            # The attempt may have taken the lock just as the cancel came: let it go.
            with contextlib.suppress(Exception):
                taken = await attempt
                if isinstance(taken, RunLock):
                    taken.release()
            raise
        if isinstance(got, RunLock):
            return got
        told = _busy(spec, got, wait=wait, on_wait=on_wait, told=told)
        await asyncio.sleep(_POLL)


@contextlib.contextmanager
def run_lock(spec: PipelineSpec, root: Path, *, wait: bool = False,
             on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the pipeline's run lock for the block (see `acquire_run_lock`)."""
    held = acquire_run_lock(spec, root, wait=wait, on_wait=on_wait)
    try:
        yield
    finally:
        held.release()
