"""The package's layers, as README.md's layout lists them: no import runs upward.

`LAYERS` is the one ordered list, bottom first; the README's layout block must list
the same parts in the same order. Every module, `cli/` included, may import only the
parts listed before its own and its own part, plus the `EXCEPTIONS` declared here
with their reasons; the emulator, a product of its own, is narrowed to what it shares
with civflow (`INDEPENDENT`). And no module imports its way back to itself.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Set
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "civflow"

# Bottom first: each part may import those before it. README.md prints this list.
LAYERS = (
    "errors", "keys", "names", "origin", "producers",
    "store", "client",
    "loading", "template", "catalog", "check", "expand", "request", "planning", "grouping",
    "remote", "runner", "review", "scaffold",
    "emulator", "connect", "_api", "__init__", "cli", "__main__",
)

# Imports that run upward, each with the reason it is allowed.
EXCEPTIONS: dict[tuple[str, str], str] = {
    ("scaffold", "__init__"): "a new project's files name the civflow that made them, and "
                              "`__version__` is kept in the package root",
}

# Parts that may import only these (besides themselves), wherever they stand.
INDEPENDENT: dict[str, frozenset[str]] = {
    # A product of its own (Starlette), shipped as an extra: it shares the step catalog,
    # the error tree and the origin mark with civflow, nothing that plans or runs.
    "emulator": frozenset({"catalog", "errors", "origin"}),
}


def _part(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))
MODULES = {_module(path): path for path in SOURCES}


def _imported_modules(path: Path) -> set[str]:
    """The civflow modules `path` imports anywhere (in functions and for type checking
    too): `from civflow.x import y` names the module `civflow.x.y` when there is one,
    else `civflow.x`; `from civflow import __version__` names the package root."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES
                     else node.module for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES)
    return found


def _part_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def allowed(part: str) -> set[str]:
    """What `part` may import: the parts below it, itself, and its declared exceptions."""
    mine = {*LAYERS[:LAYERS.index(part)], part}
    mine |= {up for (low, up) in EXCEPTIONS if low == part}
    if part in INDEPENDENT:
        mine &= INDEPENDENT[part] | {part}
    return mine


def readme_layers(text: str) -> list[str]:
    """The parts README.md's layout block lists, in order: the names that open each
    line indented by two spaces (`errors.py  keys.py  names.py   the error tree`)."""
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    found: list[str] = []
    for line in block.splitlines():
        if not re.match(r"^  \S", line):
            continue
        for word in line.split():
            name = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:\.py|/)", word)
            if name is None:
                break
            found.append(name.group(1))
    return found


def test_the_readme_lists_the_layers_in_their_order() -> None:
    """The picture and the test are one list: edit LAYERS and README.md together."""
    assert readme_layers((ROOT / "README.md").read_text(encoding="utf-8")) == list(LAYERS)


def test_every_part_of_the_package_has_a_layer() -> None:
    assert {_part(path) for path in SOURCES} == set(LAYERS)


def test_the_cli_is_imported_by_main_alone() -> None:
    assert [p for p in LAYERS if "cli" in allowed(p) and p != "cli"] == ["__main__"]


def test_every_declared_exception_is_still_needed() -> None:
    made = {(_part(path), _part_of(module))
            for path in SOURCES for module in _imported_modules(path)}
    assert set(EXCEPTIONS) <= made, f"no longer imported: {sorted(set(EXCEPTIONS) - made)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_runs_upward(path: Path) -> None:
    part = _part(path)
    upward = {_part_of(module) for module in _imported_modules(path)} - allowed(part)
    assert not upward, f"{path.relative_to(PACKAGE)} ({part}) imports {sorted(upward)}"


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules importing it runs: those it names, and the packages they
    sit in (importing `civflow.store.journal` runs `civflow/store/__init__.py` first,
    unless the importer is inside that package already)."""
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        runs: set[str] = set()
        for target in _imported_modules(path):
            runs.add(target)
            parts = target.split(".")
            for n in range(2, len(parts)):
                package = ".".join(parts[:n])
                if not module.startswith(package + "."):
                    runs.add(package)
        runs.discard(module)
        graph[module] = runs
    return graph


def find_cycle(graph: Mapping[str, Set[str]]) -> list[str] | None:
    """One import circle as a path (`a -> b -> a`), or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return [*path[path.index(nxt):], nxt]
            if nxt not in done:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_find_cycle_names_the_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_its_way_back_to_itself() -> None:
    """No import circle, however late the import (in a function, for type checking)."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or ())


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
