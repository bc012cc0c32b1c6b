"""Helpers for review tests: a real git repository in a temp folder, the CLI in-process."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import stand_in
from tests.cli_in_process import exit_code

REPO = Path(__file__).resolve().parents[2]
MODEL = "urn:air:sdxl:checkpoint:civitai:101055@128078"
LORA = "urn:air:sdxl:lora:civitai:123456@789012"
SUBJECTS = ["fox", "owl", "cat", "dog", "hare", "crow", "wolf", "bear", "lynx", "seal",
            "frog", "moth", "newt", "swan", "toad", "wren", "yak", "ibis", "mole", "vole"]
STYLES = ["ink", "oil", "pastel", "charcoal", "gouache", "fresco", "etching", "pixel",
          "mosaic", "collage"]

# The 200-instance sweep (20 subjects x 10 styles). The fox prompt has a clause of its
# own and each style its own LoRA strength, so one word and one number each change a
# known subset: 10 fox instances, 20 ink instances, 29 in all.
PROMPT = ("a {{ matrix.subject }} in {{ matrix.style }} style"
          "{% if matrix.subject == 'fox' %}, in the snow{% endif %}")
SWEEP = f"""\
version: 1
name: sweep
vars:
  lora: {LORA}
  strengths:
{chr(10).join(f"    {s}: 0.6" for s in STYLES)}
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
steps:
  shot:
    type: imageGen
    matrix:
      subject: [{", ".join(SUBJECTS)}]
      style: [{", ".join(STYLES)}]
    input:
      prompt: "{PROMPT}"
      width: 64
      height: 64
      steps: 4
      loras:
        "{{{{ lora }}}}": "{{{{ strengths[matrix.style] }}}}"
"""


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          check=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    return done.stdout


def make_repo(root: Path) -> Path:
    """An empty git repository on branch main that ignores .civflow/ and out/."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "test@example.com")
    git(root, "config", "user.name", "civflow tests")
    git(root, "config", "commit.gpgsign", "false")
    (root / ".gitignore").write_text(".civflow/\nout/\n", encoding="utf-8")
    (root / "pipelines").mkdir(exist_ok=True)
    return root


def write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD").strip()


def run_paid(root: Path, pipeline: str) -> None:
    """`civflow run PIPELINE --yes` in a child process (module fixtures have no capsys)
    against a stand-in for the real API: the committed lockfile then records paid work
    and its costs, as after a real run."""
    stand_in.run_paid(root, pipeline)


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cwd: Path,
        *args: str) -> Outcome:
    """The real `civflow` command line in this process, run from `cwd`."""
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = exit_code(*args)
    captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err)
