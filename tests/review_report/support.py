"""A git repository with pipelines run against a stand-in for the real API, for report tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli_in_process import exit_code
from tests.stand_in import civitai_stand_in, pointed_at

MODEL = "urn:air:sdxl:checkpoint:civitai:101055@128078"
# Three LoRAs by a short name (so instances read `sweep[lora=ink,seed=11]`), each with
# its AIR and strength; the sweep crosses them with four seeds: a 3 × 4 grid.
LORAS = {"ink": "urn:air:sdxl:lora:civitai:123456@789012",
         "clay": "urn:air:sdxl:lora:civitai:200000@250000",
         "neon": "urn:air:sdxl:lora:civitai:300000@350000"}
SEEDS = (11, 22, 33, 44)


def many_loras(count: int) -> dict[str, str]:
    """`count` LoRAs named l00, l01, …, with made-up AIRs the emulator accepts; the
    second is named clay, the one a change edits."""
    names = [f"l{i:02d}" for i in range(count)]
    names[1] = "clay"
    return {name: f"urn:air:sdxl:lora:civitai:{400000 + i}@{500000 + i}"
            for i, name in enumerate(names)}


def looks(*, cover: str = "watercolor", clay: float = 0.6, size: int = 512,
          prompt: str = "a lighthouse on a cliff at dusk", lora_airs: dict[str, str] = LORAS,
          seeds: tuple[int, ...] = SEEDS) -> str:
    """A cover image and a LoRA × seed sweep (3 × 4 by default); `cover` and `clay` are
    what a change edits (the cover's prompt, one LoRA's strength)."""
    strengths = {name: 0.8 for name in lora_airs} | {"neon": 1.0, "clay": clay}
    loras = "\n".join(f"    {name}: {{air: \"{air}\", strength: {strengths[name]}}}"
                      for name, air in lora_airs.items())
    return f"""\
version: 1
name: looks
vars:
  subject: "{prompt}"
  loras:
{loras}
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
    width: {size}
    height: {size}
    steps: 10
steps:
  cover:
    type: imageGen
    input:
      prompt: "{{{{ subject }}}}, {cover}"
      negativePrompt: blurry
      seed: 7
  sweep:
    type: imageGen
    matrix:
      lora: [{", ".join(lora_airs)}]
      seed: [{", ".join(map(str, seeds))}]
    input:
      prompt: "{{{{ subject }}}}, 35mm photo"
      seed: "{{{{ matrix.seed }}}}"
      loras:
        "{{{{ loras[matrix.lora].air }}}}": "{{{{ loras[matrix.lora].strength }}}}"
"""


def changed_by_edit() -> set[str]:
    """The instances `looks(cover=…, clay=…)` changes against `looks()`."""
    return {"cover", *(f"sweep[lora=clay,seed={s}]" for s in SEEDS)}


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


class Repo:
    """A git repository in a temp folder whose pipelines run against a stand-in for the
    real API (tests/stand_in.py), so its lockfiles hold paid work."""

    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.root = root
        self.capsys = capsys
        (root / "pipelines").mkdir(exist_ok=True)
        (root / ".gitignore").write_text(".civflow/\nout/\nreport/\n", encoding="utf-8")
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", "-c", "user.name=civflow tests", "-c", "user.email=tests@example.invalid",
             "-c", "commit.gpgsign=false", *args],
            cwd=self.root, check=True, capture_output=True, text=True, timeout=60)
        return done.stdout

    def write(self, name: str, text: str) -> Path:
        path = self.root / "pipelines" / f"{name}.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def cli(self, *args: str) -> Outcome:
        """The real `civflow` command line, in this process; never raises SystemExit."""
        self.capsys.readouterr()
        code = exit_code(*args)
        captured = self.capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    def run(self, name: str) -> None:
        """`civflow run` against a stand-in for the real API: paid work, committed."""
        with civitai_stand_in() as api, pointed_at(api):
            done = self.cli("run", f"pipelines/{name}.yaml", "--yes")
        assert done.code == 0, done.err


def make_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              capsys: pytest.CaptureFixture[str]) -> Repo:
    monkeypatch.chdir(tmp_path)
    for name in ("CIVFLOW_BACKEND", "CIVFLOW_REMOTE", "CIVITAI_API_KEY", "CIVITAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CIVFLOW_EMULATOR_TIME_SCALE", "0")
    monkeypatch.setenv("CIVFLOW_JITTER_SEED", "20241125")
    return Repo(tmp_path, capsys)


def changed_looks(repo: Repo) -> None:
    """main: `looks` run and committed; branch `change`: the cover's prompt and the clay
    LoRA's strength edited, and run."""
    repo.write("looks", looks())
    repo.run("looks")
    repo.commit("looks")
    repo.git("checkout", "-q", "-b", "change")
    repo.write("looks", looks(cover="oil painting", clay=0.9))
    repo.run("looks")
