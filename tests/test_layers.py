"""The package's layers, as the folder list reads: no import runs upward.

load -> check -> expand -> plan -> request -> runner -> cli, with catalog, template,
client, store and the base modules (errors, keys, names) below, the emulator
beside (a product of its own that shares only the catalog and the error tree), and
remote (push/pull) reading pipelines and the local store, never running anything.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "civflow"
BASE = {"errors", "keys", "names", "origin", "producers"}
# What each part may import besides itself and the base modules.
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "keys": set(), "names": {"errors"}, "origin": set(), "producers": set(),
    "load": set(),
    "template": set(),
    "catalog": set(),
    "check": {"load", "template", "catalog"},
    "expand": {"load", "check", "template", "catalog"},
    "plan": {"load", "check", "expand", "template", "catalog"},
    "request": {"load", "check", "expand"},
    "grouping": {"load", "check", "expand", "plan", "request", "store", "catalog", "template"},
    "client": set(),
    "store": set(),
    "runner": {"load", "check", "expand", "plan", "request", "grouping", "client", "store",
               "catalog", "template", "remote"},
    "emulator": {"catalog", "client"},
    "remote": {"load", "store"},
    "scaffold": {"load", "catalog"},
    "review": {"load", "check", "expand", "plan", "request", "runner", "store", "catalog",
               "template", "remote"},
    "connect": {"client", "emulator"},
    "_api": {"load", "check", "plan", "runner", "remote", "client", "connect"},
    "__init__": {"_api", "check", "plan", "runner"},
    "__main__": {"cli"},
}


def _part(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "civflow" or len(parts) < 2:
                continue
            if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").is_file():
                found.add(parts[1])
    return found


SOURCES = sorted(p for p in PACKAGE.rglob("*.py") if _part(p) != "cli")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_upward(path: Path) -> None:
    part = _part(path)
    allowed = ALLOWED[part] | BASE | {part}
    upward = _imports(path) - allowed
    assert not upward, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(upward)}"


def test_checking_commands_start_without_the_runner_and_http(tmp_path: Path) -> None:
    """`civflow validate` (run in CI on every change) imports what checks a pipeline and
    nothing that runs one: no runner, no HTTP client, no asyncio, no rich."""
    (tmp_path / "p.yaml").write_text("version: 1\nname: p\nsteps:\n  a:\n    type: echo\n"
                                     "    input: {message: hi}\n", encoding="utf-8")
    probe = ("import sys\nfrom civflow.cli import main\nsys.argv = ['civflow', 'validate', "
             "'p.yaml']\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
             "print(' '.join(sorted(m for m in ('civflow.runner', 'httpx', 'asyncio', "
             "'rich') if m in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    assert "p.yaml: ok" in done.stdout, done.stderr
    assert done.stdout.splitlines()[-1] == ""


def test_the_package_still_offers_its_functions() -> None:
    import civflow

    assert callable(civflow.plan) and callable(civflow.run) and callable(civflow.load)
    assert civflow.Estimate.__name__ == "Estimate" and "arun" in dir(civflow)
    assert set(civflow.__all__) <= set(dir(civflow))
    with pytest.raises(AttributeError):
        civflow.no_such_thing  # noqa: B018
