"""A run of a mostly unchanged pipeline reads as what changed: cached instances are one
summary line (each on its own line with -v)."""

from __future__ import annotations

from civflow.emulator import RunningEmulator
from tests.e2e.support import MODEL, Project

SWEEP = f"""\
version: 1
name: sweep
steps:
  shot:
    type: imageGen
    matrix:
      n: [1, 2, 3, 4, 5, 6]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "a teapot, take {{{{ matrix.n }}}}{{{{ ', at dusk' if matrix.n == 1 else '' }}}}"
      width: 256
      height: 256
      steps: 10
"""


def test_cached_instances_are_one_line_unless_verbose(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, _ = ready
    path = project.write("sweep", SWEEP)
    assert project.run("sweep").code == 0
    path.write_text(SWEEP.replace("at dusk", "at dawn"), encoding="utf-8")
    changed = project.run("sweep")
    assert changed.code == 0, changed.text
    lines = changed.err.splitlines()
    assert sum("shot[n=" in line for line in lines) == 3, changed.err  # plan, submit, done
    assert "shot[n=2]" not in changed.err
    assert "5 instance(s) cached: unchanged, nothing submitted (-v lists them)" in changed.err
    verbose = project.run("sweep", "-v")
    assert sum(": cached" in line for line in verbose.err.splitlines()) == 6, verbose.err
