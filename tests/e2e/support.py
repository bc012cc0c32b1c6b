"""Helpers for end-to-end tests: a temp project, the real CLI in-process, emulator counters."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from civflow.emulator import RunningEmulator
from tests.cli_in_process import exit_code

SECRET = "sk-test-SECRET-7f3a9c2e51d04b8c"
REPO = Path(__file__).resolve().parents[2]
MODEL = "urn:air:sdxl:checkpoint:civitai:101055@128078"
WORKFLOWS = "POST /v2/consumer/workflows"

# A small chain that exercises every kind of artifact passing: images, a foreach over
# them, and a video from the first upscale. Sizes are tiny so media renders fast.
# Six images, one upscale per image (a fan-out known at run time), then a step that
# needs the last one: many instances in flight at once, for the crash tests.
FAN = f"""\
version: 1
name: fan
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
steps:
  gen:
    type: imageGen
    matrix:
      n: [1, 2, 3, 4, 5, 6]
    input:
      prompt: "tile number {{{{ matrix.n }}}}"
      width: 256
      height: 256
      steps: 10
  up:
    type: imageUpscaler
    foreach: "{{{{ steps.gen.outputs }}}}"
    input:
      image: "{{{{ item.images[0].url }}}}"
  done:
    type: echo
    input:
      message: "{{{{ steps.up.outputs[5].blob.url }}}}"
"""

CHAIN = f"""\
version: 1
name: chain
vars:
  subject: a lighthouse at dusk
  style: watercolor
  motion: slow pan
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
steps:
  hero:
    type: imageGen
    input:
      prompt: "{{{{ subject }}}}, {{{{ style }}}}"
      width: 256
      height: 256
      steps: 10
      quantity: 2
  upscale:
    type: imageUpscaler
    foreach: "{{{{ steps.hero.output.images }}}}"
    input:
      image: "{{{{ item.url }}}}"
      numberOfRepeats: 1
  clip:
    type: videoGen
    input:
      engine: wan
      version: v2.6
      provider: fal
      cfgScale: 4
      operation: image-to-video
      images: ["{{{{ steps.upscale.outputs[0].blob.url }}}}"]
      prompt: "{{{{ motion }}}}, {{{{ style }}}}"
      resolution: 720p
      duration: 5
"""


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Project:
    """A git-less project folder (it holds `.civflow/`) with pipelines under `pipelines/`."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        (root / ".civflow").mkdir(exist_ok=True)
        (root / "pipelines").mkdir(exist_ok=True)

    def write(self, name: str, text: str) -> Path:
        path = self.root / "pipelines" / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def cli(self, *args: str) -> Outcome:
        """The real `civflow` command line, in this process; never raises SystemExit."""
        self.capsys.readouterr()
        code = exit_code(*args)
        captured = self.capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    def run(self, name: str, *args: str) -> Outcome:
        return self.cli("run", f"pipelines/{name}.yaml", "--yes", *args)

    def lock_path(self, name: str) -> Path:
        return self.root / "pipelines" / f"{name}.lock.json"

    def lock(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.lock_path(name).read_text(encoding="utf-8"))
        return data

    def journals(self) -> list[Path]:
        return sorted((self.root / ".civflow" / "runs").glob("*/journal.jsonl"))

    def journal_records(self) -> Iterator[Mapping[str, Any]]:
        for path in self.journals():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    yield json.loads(line)

    def journal_records_safe(self) -> Iterator[Mapping[str, Any]]:
        """Records of journals another process is writing: a torn last line is skipped."""
        for path in self.journals():
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def written_files(self) -> Iterator[Path]:
        """Every file civflow may have written (the pipelines folder included)."""
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and ".git" not in path.parts:
                yield path


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
            capsys: pytest.CaptureFixture[str]) -> Project:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CIVFLOW_BACKEND", raising=False)
    monkeypatch.setenv("CIVFLOW_EMULATOR_TIME_SCALE", "0")
    monkeypatch.setenv("CIVFLOW_JITTER_SEED", "20241125")  # retry jitter, seeded
    return Project(tmp_path, capsys)


def aim(monkeypatch: pytest.MonkeyPatch, emulator: RunningEmulator, key: str = SECRET) -> None:
    """Point the client at `emulator` as if it were the real API."""
    monkeypatch.setenv("CIVITAI_BASE_URL", emulator.url)
    monkeypatch.setenv("CIVITAI_API_KEY", key)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def created(emulator: RunningEmulator) -> int:
    """Instances the API made and charged for: each step of each workflow created (a
    batch of five counts five), whatever the batching."""
    return int(emulator.counters()["steps_created"])


def workflows_made(emulator: RunningEmulator) -> int:
    """Workflows the API created (a batch counts once)."""
    return int(emulator.counters()["workflows_created"])


def requests_to(emulator: RunningEmulator, route: str, *, ok_only: bool = False) -> int:
    by_status: dict[str, int] = emulator.counters()["requests"].get(route, {})
    return sum(n for status, n in by_status.items()
               if not ok_only or (status.isdigit() and int(status) < 400))


def check_artifacts(project: Project, name: str) -> dict[str, Any]:
    """Every artifact the lockfile names exists, is non-empty and has its recorded hash;
    and it names some (a lockfile without any would pass every check unchecked)."""
    lock = project.lock(name)
    folder = project.lock_path(name).parent
    artifacts = [a for entry in lock["instances"].values() for a in entry["artifacts"]]
    assert artifacts, f"{name}: the lockfile names no artifact to check"
    for artifact in artifacts:
        path = folder / artifact["path"]
        assert path.is_file(), path
        assert path.stat().st_size == artifact["size"] > 0
        assert sha256_of(path) == artifact["sha256"], path
    return lock


def subprocess_env(emulator: RunningEmulator, key: str = SECRET) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CIVITAI_", "CIVFLOW_", "PYTEST_"))}
    env.update(CIVITAI_BASE_URL=emulator.url, CIVITAI_API_KEY=key, CIVFLOW_JITTER_SEED="7",
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    return env


def spawn(project: Project, emulator: RunningEmulator, name: str, *args: str,
          log: str = "run") -> subprocess.Popen[bytes]:
    """`python -m civflow run` in its own process, its output going to files in the project."""
    out = (project.root / f"{log}.out").open("wb")
    err = (project.root / f"{log}.err").open("wb")
    with out, err:
        return subprocess.Popen(
            [sys.executable, "-m", "civflow", "run", f"pipelines/{name}.yaml", "--yes", *args],
            cwd=project.root, env=subprocess_env(emulator), stdout=out, stderr=err,
            stdin=subprocess.DEVNULL)
