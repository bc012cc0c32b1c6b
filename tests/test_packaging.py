"""civflow builds into an sdist and a wheel an index accepts, and the line `civflow init`
writes into CI installs it.

Promises guarded here:
- `python -m build --sdist --wheel` succeeds (without network: --no-isolation, with the
  dev extra's build backend) and `twine check --strict` passes both files;
- the version is one: the wheel's and the sdist's metadata, `civflow.__version__` and
  `civflow --version` ("civflow X.Y.Z") agree;
- the wheel holds every module and every data file the command line reads (the workflow
  and starter templates, the generated catalog and editor schema, the pipeline schema),
  the `civflow` command, and nothing else: no tests/, .venv, docs or caches;
- (registry) the workflow's own `pip install` line, run in a fresh virtualenv with
  pip's index switched off and a wheelhouse of that wheel and its dependencies, installs
  a civflow whose `--version` is this one and whose `init` and `validate` work. The
  dependencies are downloaded first, so the test is marked `registry`: it skips (one
  summary line) when the package index cannot be reached, and fails so under CI=true.
"""

from __future__ import annotations

import email.parser
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

import civflow
from civflow.scaffold.starter import WORKFLOW_FILE
from tests.scaffold.actions import load_workflow, run_script

ROOT = Path(__file__).resolve().parents[1]
VERSION = civflow.__version__
# What the command line reads from the installed package besides modules.
PACKAGE_DATA = (
    "civflow/py.typed",
    "civflow/catalog/_generated/catalog.json",
    "civflow/scaffold/_generated/editor.schema.json",
    "civflow/loading/pipeline.schema.json",  # schemas/pipeline.schema.json, force-included
    "civflow/scaffold/templates/civflow.yml",
    "civflow/scaffold/templates/hello.yaml",
    "civflow/scaffold/templates/post-checkout",
    "civflow/scaffold/templates/pre-commit-config.yaml",
)


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


def _run(*args: str | Path, cwd: Path = ROOT, env: dict[str, str] | None = None,
         timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    missing = [name for name in ("build", "hatchling", "twine")
               if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (pip install -e '.[dev]')"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("dist")
    done = _run(sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation",
                "--outdir", out, ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel=wheel, sdist=sdist)


def test_the_build_is_one_an_index_accepts(dist: Dist) -> None:
    assert dist.wheel.name == f"civflow-{VERSION}-py3-none-any.whl"
    assert dist.sdist.name == f"civflow-{VERSION}.tar.gz"
    done = _run(sys.executable, "-m", "twine", "check", "--strict", dist.wheel, dist.sdist)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_version_is_written_once(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        metadata = wheel.read(f"civflow-{VERSION}.dist-info/METADATA").decode()
    with tarfile.open(dist.sdist) as sdist:
        member = sdist.extractfile(f"civflow-{VERSION}/PKG-INFO")
        assert member is not None
        pkg_info = member.read().decode()
    parse = email.parser.Parser().parsestr
    assert parse(metadata)["Version"] == VERSION
    assert parse(pkg_info)["Version"] == VERSION
    done = _run(sys.executable, "-m", "civflow", "--version")
    assert (done.returncode, done.stdout) == (0, f"civflow {VERSION}\n"), done.stderr


def test_the_wheel_holds_what_the_command_line_needs_and_nothing_else(dist: Dist) -> None:
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = set(wheel.namelist())
        entry_points = wheel.read(f"civflow-{VERSION}.dist-info/entry_points.txt").decode()
    assert "civflow = civflow.cli:entry" in entry_points
    assert not set(PACKAGE_DATA) - names
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "civflow").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert not modules - names
    info = f"civflow-{VERSION}.dist-info/"
    assert {n for n in names if not n.startswith(("civflow/", info))} == set()
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # The sdist is the repository's files: never the virtualenv or caches.
    with tarfile.open(dist.sdist) as sdist:
        members = [m.split("/", 1)[1] for m in sdist.getnames() if "/" in m]
    assert {"pyproject.toml", "README.md", "civflow/__init__.py",
            "schemas/pipeline.schema.json"} <= set(members)
    assert not [m for m in members
                if m.startswith((".venv/", ".git/")) or "__pycache__" in m]


@pytest.mark.registry
@pytest.mark.timeout(900)
def test_the_workflow_install_line_installs_civflow(dist: Dist, tmp_path: Path) -> None:
    """The default install step of `civflow init`'s workflow, run for real offline."""
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    shutil.copy(dist.wheel, wheelhouse)
    done = _run(sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest",
                wheelhouse, dist.wheel, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    done = _run(sys.executable, "-m", "civflow", "init", tmp_path / "studio", "--no-hooks")
    assert done.returncode == 0, done.stdout + done.stderr
    flow = load_workflow((tmp_path / "studio" / WORKFLOW_FILE).read_text(encoding="utf-8"))
    lines = {step["run"] for job in flow["jobs"].values() for step in job["steps"]
             if step.get("name") == "Install civflow"}
    assert lines == {f"pip install civflow=={VERSION}"}

    venv = tmp_path / "venv"
    done = _run(sys.executable, "-m", "venv", venv)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    # As on the runner after setup-python: this virtualenv's pip first on PATH. pip reads
    # no configuration file and no index: the wheelhouse is all there is.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "CIVFLOW_", "CIVITAI_"))}
    env.update(PATH=os.pathsep.join([str(venv / "bin"), env.get("PATH", "")]),
               VIRTUAL_ENV=str(venv), PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
               PIP_FIND_LINKS=str(wheelhouse), PIP_DISABLE_PIP_VERSION_CHECK="1")
    (line,) = lines
    done = run_script(line, cwd=tmp_path, env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    done = _run(venv / "bin" / "civflow", "--version", env=env)
    assert (done.returncode, done.stdout) == (0, f"civflow {VERSION}\n"), done.stderr
    done = _run(venv / "bin" / "python", "-c", "import civflow; print(civflow.__file__)",
                cwd=tmp_path, env=env)
    assert Path(done.stdout.strip()).is_relative_to(venv), done.stdout + done.stderr
    # The installed package data works: a starter repository, and its pipeline validates.
    done = _run(venv / "bin" / "civflow", "init", "fresh", "--no-hooks", cwd=tmp_path,
                env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    done = _run(venv / "bin" / "civflow", "validate", "fresh/pipelines/hello.yaml",
                cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
