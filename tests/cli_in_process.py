"""The `civflow` command line run in the test's process as a child process would run it.

Starting an interpreter and importing civflow costs ~0.4 s per command; tests that
only need what a command does (its exit code, output and files), not a process of its
own (signals, kills, hooks git runs), call `run_cli` instead of `python -m civflow`.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from civflow.cli import main


def exit_code(*args: str) -> int:
    """`civflow ARGS` in this process; its exit code (`main` ends in SystemExit)."""
    try:
        main(list(args))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    return 0


def run_cli(*args: str | Path, cwd: Path,
            env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`civflow ARGS` in `cwd` with `env` as its whole environment, its output captured
    and nothing on its standard input (no terminal: it asks nothing)."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    saved, stdin = dict(os.environ), sys.stdin
    os.environ.clear()
    os.environ.update(env)
    sys.stdin = io.StringIO("")
    try:
        with contextlib.chdir(cwd), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            code = exit_code(*argv)
    finally:
        sys.stdin = stdin
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["civflow", *argv], code, out.getvalue(), err.getvalue())
