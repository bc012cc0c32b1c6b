"""The `civflow` program pauses the cyclic collector while it starts, then collects less often.

`civflow.cli.entry` (the console script and `python -m civflow`) starts with the
collector off and turns it back on, with what start-up made frozen, once the command is
loaded; `run` once its pipeline is checked. Each probe runs the program in a fresh
interpreter, as a user would, and looks at the collector when the runner starts and when
the program ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, sys
seen = {"in_run": None}
def watch(frame, event, arg):
    # the runner's `execute` begins: is the collector on by then?
    if event == "call" and frame.f_code.co_name == "execute" and \\
            frame.f_code.co_filename.replace("\\\\", "/").endswith("civflow/runner/__init__.py"):
        seen["in_run"] = gc.isenabled()
sys.setprofile(watch)
from civflow.cli import entry
sys.argv = ["civflow", *sys.argv[1:]]
try:
    entry()
except SystemExit as stop:
    seen["code"] = stop.code
sys.setprofile(None)
seen["enabled"] = gc.isenabled()
seen["frozen"] = gc.get_freeze_count()
seen["young"] = gc.get_threshold()[0]
print(json.dumps(seen))
"""


def _program(tmp_path: Path, *args: str) -> dict[str, object]:
    (tmp_path / "p.yaml").write_text(
        "version: 1\nname: p\nsteps:\n  a:\n    type: echo\n    matrix: {i: [1, 2, 3]}\n"
        "    input: {message: 'hi {{ matrix.i }}'}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(PACKAGE)})
    assert done.returncode == 0, done.stderr
    seen: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return seen


@pytest.mark.parametrize("args", [("validate", "p.yaml"), ("--version",),
                                  ("validate", "missing.yaml")])
def test_the_collector_is_on_again_after_any_command(tmp_path: Path,
                                                     args: tuple[str, ...]) -> None:
    seen = _program(tmp_path, *args)
    assert seen["enabled"] is True
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000
    assert isinstance(seen["young"], int) and seen["young"] > 700  # fewer young collections


def test_a_run_collects_while_it_runs(tmp_path: Path) -> None:
    """The collector is back before the runner starts, not only when the program ends."""
    seen = _program(tmp_path, "run", "p.yaml", "--emulator")
    assert seen["code"] in (0, None)
    assert seen["enabled"] is True
    assert seen["in_run"] is True


def test_main_leaves_the_callers_collector_alone() -> None:
    """Tests and programs that call `main` keep their collector as they set it."""
    import gc

    from civflow.cli import main

    frozen, threshold = gc.get_freeze_count(), gc.get_threshold()
    with pytest.raises(SystemExit):
        main(["--version"])
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    assert gc.get_threshold() == threshold
