"""Every pipeline the repository ships, and the README's first command, run end to end.

A shipped example that validates and then fails after its first paid step is the
worst first impression civflow can make; these tests run each one on the emulator.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.support import REPO, Project

SHIPPED = sorted((REPO / "pipelines").glob("*.yaml"))


def _copy_pipelines(project: Project) -> None:
    shutil.rmtree(project.root / "pipelines")
    shutil.copytree(REPO / "pipelines", project.root / "pipelines",
                    ignore=shutil.ignore_patterns("*.lock.json"))


@pytest.mark.parametrize("pipeline", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_pipeline_runs_on_the_emulator(project: Project, pipeline: Path) -> None:
    _copy_pipelines(project)
    target = f"pipelines/{pipeline.name}"
    assert project.cli("validate", target).code == 0
    first = project.cli("run", target, "--emulator")
    assert first.code == 0, first.text
    assert "failed" not in first.err.split("\n")[-4], first.text
    again = project.cli("run", target, "--emulator")
    assert again.code == 0, again.text
    assert "succeeded" not in again.err and "cached" in again.err, again.text


def test_the_readmes_first_command_runs_a_real_pipeline(tmp_path: Path) -> None:
    """The README promises one command that installs and runs a pipeline on the
    emulator; the install part is what `.ci/run` does, the rest runs here verbatim."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.+?)\n```", readme, re.S)
    assert block is not None
    command = block.group(1).strip()
    install, _, rest = command.rpartition(" && ")
    assert install == "python3 -m venv .venv && .venv/bin/pip install -e '.[emulator]'"
    assert rest.startswith(".venv/bin/civflow run --emulator pipelines/")
    shutil.copytree(REPO / "pipelines", tmp_path / "pipelines",
                    ignore=shutil.ignore_patterns("*.lock.json"))
    (tmp_path / ".civflow").mkdir()
    args = rest.split()[1:]
    done = subprocess.run([sys.executable, "-m", "civflow", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
                               "CIVFLOW_EMULATOR_TIME_SCALE": "0"})
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    name = Path(args[-1]).stem
    # An emulator run is a preview: recorded under .civflow/previews (git-ignored), never
    # in the committed lockfile a real run would take for paid work.
    assert (tmp_path / ".civflow" / "previews" / f"{name}.lock.json").is_file()
    assert not (tmp_path / "pipelines" / f"{name}.lock.json").exists()
    produced = {p.suffix for p in (tmp_path / "out" / name).rglob("*") if p.is_file()}
    assert produced & {".png", ".jpeg", ".webp"} and ".mp4" in produced, produced
