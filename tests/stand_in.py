"""An API that is not the emulator, for tests that need paid work in a lockfile.

The emulator's engine served with its "I am the emulator" header off
(`EmulatorConfig(announce=False)`, reachable from Python only): to civflow it is the
real Civitai API, so what a run makes there is recorded in the committed lockfile as
made by Civitai. Tests use it where the story is "a run against the real API"; every
`--emulator` run stays a preview.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.cli_in_process import run_cli

KEY = "stand-in-key-0123456789abcdef"


@contextlib.contextmanager
def civitai_stand_in(**config: Any) -> Iterator[RunningEmulator]:
    with start_emulator(EmulatorConfig(time_scale=0, api_key=KEY, announce=False,
                                       **config)) as running:
        yield running


def api_env(running: RunningEmulator, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) pointed at `running` as the real API."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in ("CIVFLOW_BACKEND",)}
    env.update(CIVITAI_BASE_URL=running.url, CIVITAI_API_KEY=KEY)
    return env


@contextlib.contextmanager
def pointed_at(running: RunningEmulator) -> Iterator[None]:
    """This process's environment pointed at `running` for the block (in-process CLI)."""
    saved = {k: os.environ.get(k) for k in ("CIVITAI_BASE_URL", "CIVITAI_API_KEY",
                                             "CIVFLOW_BACKEND")}
    os.environ.update(api_env(running, {}))
    os.environ.pop("CIVFLOW_BACKEND", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_paid(root: Path, pipeline: str, *args: str,
             running: RunningEmulator | None = None) -> subprocess.CompletedProcess[str]:
    """`civflow run PIPELINE --yes ARGS`, as a child process would run it (in-process:
    tests/cli_in_process.py), against a stand-in for the real API (a fresh one unless
    `running` is given); asserts it succeeded."""
    with contextlib.ExitStack() as stack:
        api = running or stack.enter_context(civitai_stand_in())
        env = api_env(api)
        env.setdefault("CIVFLOW_EMULATOR_TIME_SCALE", "0")
        done = run_cli("run", pipeline, "--yes", *args, cwd=root, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done
