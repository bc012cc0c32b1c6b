"""The base install is small: the emulator's and the report's media stack are extras.

A command that needs a missing extra says which one to install; the report without
Pillow and PyAV still shows every picture. The "missing" packages are made
unimportable in a subprocess, so these tests run in the full dev install.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

from civflow.errors import EXTRAS
from tests.e2e.support import REPO, Project
from tests.e2e.support import project as project  # a fixture

# Runs civflow's command line with some top-level packages made unimportable.
# Runs civflow's command line as an install without some top-level packages would: a
# None in sys.modules makes `import X` fail and `importlib.util.find_spec(X)` say None.
WITHOUT = """\
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
from civflow.cli import main
main(sys.argv[2:])
"""

HEAVY = {"starlette", "uvicorn", "pillow", "av"}


def _without(modules: set[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, ",".join(sorted(modules)), *args], cwd=cwd,
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
             "CIVFLOW_EMULATOR_TIME_SCALE": "0"})


def _in_extra(requirement: str, extra: str) -> bool:
    return re.search(rf"""extra == ['"]{extra}['"]""", requirement) is not None


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9_.\-]+", requirement)
    assert match is not None
    return match.group(0).lower()


def test_the_media_stack_is_not_a_base_dependency() -> None:
    requires = importlib.metadata.requires("civflow") or []
    base = {_requirement_name(r) for r in requires if "extra ==" not in r}
    assert not base & HEAVY, sorted(base & HEAVY)
    for extra in ("emulator", "report"):
        wanted = {_requirement_name(r) for r in requires if _in_extra(r, extra)}
        assert wanted, f"no civflow[{extra}] extra"
    emulator = {_requirement_name(r) for r in requires if _in_extra(r, "emulator")}
    assert emulator == HEAVY


def test_the_emulator_without_its_extra_names_the_extra(project: Project) -> None:
    project.write("hello", "version: 1\nname: hello\nsteps:\n  say:\n    type: echo\n"
                           "    input: {message: hi}\n")
    for args in (("run", "--emulator", "pipelines/hello.yaml"), ("emulator", "--port", "0")):
        done = _without(set(EXTRAS["emulator"]), *args, cwd=project.root)
        assert done.returncode == 2, done.stderr
        assert "needs civflow's optional 'emulator' packages" in done.stderr, done.stderr
        assert "hint: pip install 'civflow[emulator]'" in done.stderr
        assert "Traceback" not in done.stderr
    # Validating needs none of it.
    done = _without(set(EXTRAS["emulator"]), "validate", "pipelines/hello.yaml",
                    cwd=project.root)
    assert done.returncode == 0, done.stderr


def test_the_report_without_its_extra_shows_the_pictures(project: Project) -> None:
    project.write("pic", """\
version: 1
name: pic
steps:
  shot:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: urn:air:sdxl:checkpoint:civitai:101055@128078
      prompt: a kettle
      width: 256
      height: 256
      steps: 10
""")
    assert project.cli("run", "pipelines/pic.yaml", "--emulator").code == 0
    done = _without(set(EXTRAS["report"]), "report", "pipelines", "--out", "page",
                    cwd=project.root)
    assert done.returncode == 0, done.stderr
    page = (project.root / "page" / "index.html").read_text(encoding="utf-8")
    shown = re.findall(r'<img src="(files/[0-9a-f]{64}\.[a-z]+)"', page)
    assert len(shown) == 1, page[-2000:]
    assert (project.root / "page" / shown[0]).is_file()
    # An emulator run's picture is a preview, labelled as one.
    assert "preview: made on the emulator, not paid work" in page
    assert not list((project.root / "page").rglob("*.none")), "no 'cannot decode' marker"
