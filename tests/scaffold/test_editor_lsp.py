"""The editor schema in a real editor engine: yaml-language-server (VS Code's YAML).

Promises guarded here (the same as test_editor_schema, where an editor shows them):
- with the modeline `civflow init` writes, every shipped pipeline, every docs pipeline and
  the starter pipeline show no diagnostic at all;
- issue 15's file (`type: imageGenn`, `engine: sdxl`, `negative_prompt`, `steps: 500`)
  shows exactly four, one on each of those lines;
- completion inside a step's input offers its variant's fields, completion of `type:` the
  catalog's step types, and hover shows civflow's words for a field.

yaml-language-server is installed from the npm registry with npm (pinned): the tests are
marked `registry("npm")`, and skipped where node or npm is not installed or (outside CI)
the npm registry cannot be reached.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from civflow import catalog
from civflow.scaffold.starter import SCHEMA_FILE
from tests.scaffold.actions import base_env
from tests.scaffold.lsp import LanguageServer
from tests.test_docs import yaml_blocks

VERSION = "1.25.0"
ROOT = Path(__file__).resolve().parents[2]
MODELINE = f"# yaml-language-server: $schema=../{SCHEMA_FILE}"
pytestmark = pytest.mark.registry("npm")


@pytest.fixture(scope="module")
def server_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to install and run yaml-language-server")
    folder = tmp_path_factory.mktemp("yaml-language-server")
    done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent",
                           f"yaml-language-server@{VERSION}"], cwd=folder, env=base_env(),
                          text=True, capture_output=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    script = folder / "node_modules" / "yaml-language-server" / "bin" / "yaml-language-server"
    assert script.is_file()
    return [node, str(script), "--stdio"]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository made by `civflow init`, plus every shipped and docs pipeline in its
    pipelines/ folder with the same modeline."""
    root = tmp_path_factory.mktemp("editor") / "studio"
    done = subprocess.run(["civflow", "init", str(root), "--no-hooks"], env=base_env(),
                          text=True, capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    folder = root / "pipelines"
    for path in sorted((ROOT / "pipelines").glob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        body = lines[1:] if lines[0].startswith("# yaml-language-server") else lines
        (folder / f"shipped-{path.name}").write_text("\n".join([MODELINE, *body]) + "\n",
                                                     encoding="utf-8")
    for n, block in enumerate(b for b in yaml_blocks() if not b.is_snippet):
        data = yaml.safe_load(block.body)
        if isinstance(data, dict) and "steps" in data:
            (folder / f"docs-{n}.yaml").write_text(f"{MODELINE}\n{block.body}", "utf-8")
    return root


@pytest.fixture
def server(server_command: list[str], project: Path) -> Iterator[LanguageServer]:
    with LanguageServer(server_command, project) as running:
        yield running


def test_valid_pipelines_show_no_diagnostic(server: LanguageServer, project: Path) -> None:
    files = sorted((project / "pipelines").glob("*.yaml"))
    assert len(files) > 15
    found = server.diagnostics_of(files)
    shown = {p.name: [(d["range"]["start"]["line"] + 1, d["message"]) for d in diags]
             for p, diags in found.items() if diags}
    assert shown == {}


ISSUE_15 = f"""{MODELINE}
version: 1
name: typos
steps:
  hero:
    type: imageGenn
    input:
      engine: sdxl
      prompt: a fox
      negative_prompt: blurry
      steps: 500
"""


def test_the_four_mistakes_of_issue_15(server: LanguageServer, project: Path) -> None:
    path = project / "pipelines" / "typos.yaml"
    path.write_text(ISSUE_15, encoding="utf-8")
    (diagnostics,) = server.diagnostics_of([path]).values()
    lines = sorted(d["range"]["start"]["line"] + 1 for d in diagnostics)
    assert lines == [6, 8, 10, 11], diagnostics
    words = " ".join(d["message"] for d in diagnostics)
    assert "negative_prompt" in words and "150" in words


INPUT = f"""{MODELINE}
version: 1
name: typing
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      prompt: a fox
""" + " " * 6 + "\n"  # the cursor's line: indented under input


def test_completion_and_hover(server: LanguageServer, project: Path) -> None:
    path = project / "pipelines" / "typing.yaml"
    path.write_text(INPUT, encoding="utf-8")
    server.diagnostics_of([path])
    fields = server.at("textDocument/completion", path, 12, 7)
    labels = {item["label"] for item in fields["items"]}
    (variant,) = [v for v in catalog.input_variants() if v.discriminators == {
        "engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage"}]
    expected = set(variant.schema["properties"]) - {"engine", "ecosystem", "operation",
                                                   "prompt"}
    assert labels == expected
    types = server.at("textDocument/completion", path, 6, 11)
    assert {item["label"] for item in types["items"]} >= set(catalog.known_types())
    hover = server.at("textDocument/hover", path, 8, 8)
    assert "Which backend runs the step" in hover["contents"]["value"]
