"""Atomic writes: old or new content, never a partial file, never a stray temp file."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from civflow.errors import FileAccessError
from civflow.store.atomic import atomic_write_bytes, atomic_write_text


def test_write_creates_parents_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.json"
    atomic_write_text(target, "first\n")
    atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]


def test_new_files_get_the_usual_mode_and_replaced_files_keep_theirs(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.json"
    atomic_write_text(fresh, "{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask
    os.chmod(fresh, 0o640)
    atomic_write_text(fresh, "[]")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o640


def test_text_is_utf8_without_newline_translation(tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    atomic_write_text(target, "café\r\nline\n")
    assert target.read_bytes() == "café\r\nline\n".encode()


def test_unwritable_target_is_a_file_access_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(FileAccessError) as info:
        atomic_write_bytes(blocker / "child.json", b"{}")
    assert str(blocker / "child.json") in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]


_WRITER = """
import sys
import time
from pathlib import Path
from civflow.store.atomic import atomic_write_bytes
target = Path(sys.argv[1])
size = int(sys.argv[2])
n = 0
while True:
    atomic_write_bytes(target, (b"ab"[n % 2:n % 2 + 1]) * size)
    if n == 0:
        print("started", flush=True)
    n += 1
"""


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.05])
def test_sigkill_mid_write_leaves_old_or_new_content(tmp_path: Path, delay: float) -> None:
    size = 8 * 1024 * 1024
    target = tmp_path / "big.bin"
    repo = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), str(size)],
            stdout=subprocess.PIPE, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)},
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == b"started"
            if delay:
                # Not a timing assertion: it only varies where in the loop the kill lands.
                time.sleep(delay)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
    data = target.read_bytes()
    assert len(data) == size
    assert data in (b"a" * size, b"b" * size)
