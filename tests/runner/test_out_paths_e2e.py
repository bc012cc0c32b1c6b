"""A whole run against the emulator: a matrix value of `../../x`, a NUL-free odd value and a
300-character one all land in folders inside out/<pipeline>/ (trust issue case 3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.names import safe_dirname
from tests.e2e.support import MODEL, SECRET, Project, aim, check_artifacts
from tests.e2e.support import project as project  # re-exported as a fixture

LONG = "w" * 300
PIPELINE = f"""\
version: 1
name: odd
steps:
  sweep:
    type: imageGen
    matrix:
      style: ["../../escaped", "a:b*c?", "{LONG}"]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "a lighthouse, {{{{ matrix.style }}}}"
      width: 64
      height: 64
      steps: 4
"""


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    with start_emulator(EmulatorConfig(announce=False, time_scale=0, api_key=SECRET)) as running:
        aim(monkeypatch, running)
        yield running


def test_odd_matrix_values_stay_inside_out(project: Project, emulator: RunningEmulator
                                           ) -> None:
    project.write("odd", PIPELINE)
    outcome = project.run("odd")
    assert outcome.code == 0, outcome.text
    lock = check_artifacts(project, "odd")
    out = project.root / "out" / "odd"
    assert sorted(p.name for p in project.root.iterdir()) == [
        ".civflow", "out", "pipelines"]
    folders = {p.name for p in out.iterdir()}
    assert folders == {safe_dirname(name) for name in lock["instances"]}
    for path in out.rglob("*"):
        assert Path(path).resolve().is_relative_to(out.resolve())
