"""The documentation ships with civflow and cannot go stale.

Promises guarded here:
- the site builds with `mkdocs build --strict` (no broken link or anchor, no missing or
  orphaned page), and the build itself writes the reference pages (pipeline keys from the
  schema's descriptions, the step catalog, exit codes), so nothing new goes undocumented;
- every ```yaml example in docs/ is either a whole pipeline that passes `civflow validate`
  or is marked `# snippet` on its first line and still parses as YAML;
- every recipe runs on the emulator, and the notebook recipe's Python runs too; the
  sharing recipe's push / pull round trip restores the files on a fresh machine;
- every exit code the CLI can return has a section in the troubleshooting page.

A fenced block with `title="PATH"` is a file at PATH in the page's project: the test
writes all titled blocks of a page into one temporary folder, so includes resolve.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from civflow.cli import _exit
from tests.cli_in_process import run_cli
from tests.stand_in import KEY as STAND_IN_KEY
from tests.stand_in import civitai_stand_in

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]+)(?P<attrs>[^\n]*)\n"
                   r"(?P<body>.*?)^(?P=indent)```[ \t]*$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'title="([^"]+)"')


@dataclass(frozen=True)
class Block:
    page: Path
    lang: str
    title: str | None
    body: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_snippet(self) -> bool:
        return self.body.lstrip().startswith("# snippet")


def pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)


def blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        indent = match["indent"]
        body = "".join(line.removeprefix(indent)
                       for line in match["body"].splitlines(keepends=True))
        title = TITLE.search(match["attrs"])
        found.append(Block(page, match["lang"], title[1] if title else None, body,
                           text.count("\n", 0, match.start()) + 1))
    return found


def yaml_blocks() -> list[Block]:
    return [b for page in pages() for b in blocks(page) if b.lang == "yaml"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIVITAI_", "CIVFLOW_"))}
    env["CIVFLOW_EMULATOR_TIME_SCALE"] = "0"
    return {**env, **extra}


def project_for(page: Path, into: Path) -> dict[Block, Path]:
    """Write every titled block of `page` (and each untitled pipeline) under `into`."""
    written: dict[Block, Path] = {}
    for n, block in enumerate(blocks(page)):
        if block.is_snippet or block.lang not in {"yaml", "jinja", "json", "text", "toml"}:
            continue
        if block.title is None and block.lang != "yaml":
            continue
        target = (into / (block.title or f"example-{n}.yaml")).resolve()
        assert target.is_relative_to(into.resolve()), block.where
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.body, encoding="utf-8")
        written[block] = target
    return written


def civflow(*args: str | Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A documented command, run as a child with `_env(**env)` would run it (in-process)."""
    return run_cli(*args, cwd=cwd, env=_env(**env))


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference_hook",
                                                  DOCS / "hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- the site builds ---------------------------------------------------------------------


def test_site_builds_strict_with_generated_reference(tmp_path: Path) -> None:
    """`mkdocs build --strict` passes, and the generated pages name every schema key,
    every catalogued step type and every engine, and the CLI's commands."""
    pytest.importorskip("mkdocs", reason="the dev extra installs the docs toolchain")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(site)],
                          cwd=ROOT, text=True, capture_output=True, timeout=300,
                          check=False, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout + done.stderr

    from civflow import catalog

    keys_page = (site / "reference" / "pipeline-keys" / "index.html").read_text("utf-8")
    for key in ("version", "vars", "defaults", "workflow-tags", "steps-name-foreach",
                "steps-name-key", "steps-name-timeout", "steps-name-unchecked"):
        assert f'id="{key}"' in keys_page, key
    steps_index = (site / "reference" / "steps" / "index.html").read_text("utf-8")
    for step_type in catalog.known_types():
        assert (site / "reference" / "steps" / step_type / "index.html").is_file(), step_type
        assert f"{step_type}</code>" in steps_index, step_type
    engines = {v.discriminators["engine"] for v in catalog.catalogued_variants()
               if "engine" in v.discriminators}
    for engine in engines:
        assert f"<code>{engine}</code>" in steps_index, engine
    commands = (site / "reference" / "commands" / "index.html").read_text("utf-8")
    for name in ("validate", "plan", "run", "render", "graph", "status", "checkout"):
        assert f"civflow {name}" in commands, name
    assert "Sentinel" not in commands  # click internals leaking into the rendered defaults


def test_committed_docs_hold_every_generated_page_as_generated() -> None:
    """Generated pages are committed, so links work on GitHub, and never stale: the
    build refuses a stale one, and this compares each with a fresh generation."""
    hook = load_hook()
    for path, text in hook.generated_pages().items():
        target = DOCS / path
        assert target.is_file(), f"run: python docs/hooks/reference.py ({path} missing)"
        assert target.read_text(encoding="utf-8") == text, \
            f"run: python docs/hooks/reference.py ({path} is stale)"


def test_a_schema_key_without_description_fails_the_build() -> None:
    """A new key cannot ship undocumented: the reference generator refuses it."""
    hook = load_hook()
    schema = {"properties": {"name": {"type": "string", "description": "The name."},
                             "shiny": {"type": "boolean"}}}
    with pytest.raises(hook.UndocumentedKey, match="shiny"):
        hook.render_pipeline_keys(schema)


def test_an_exit_code_without_words_fails_the_build() -> None:
    """A new exit code in the CLI's table cannot ship undocumented."""
    hook = load_hook()

    class BrandNewError(Exception):
        pass

    with pytest.raises(hook.UndocumentedKey, match="BrandNewError"):
        hook.render_exit_codes([(BrandNewError, 10)])


def test_every_exit_code_has_a_troubleshooting_section() -> None:
    text = (DOCS / "troubleshooting.md").read_text(encoding="utf-8")
    for code in {code for _kind, code in _exit._EXIT_CODES} | {1}:
        assert f"{{#exit-{code}}}" in text, f"troubleshooting.md has no section for {code}"


# -- the examples are true ---------------------------------------------------------------


@pytest.mark.parametrize("block", yaml_blocks(), ids=lambda b: b.where)
def test_yaml_example_parses(block: Block) -> None:
    """Every YAML block in the docs is YAML (snippets included)."""
    yaml.safe_load(block.body)


PIPELINE_PAGES = sorted({b.page for b in yaml_blocks() if not b.is_snippet})


@pytest.mark.parametrize("page", PIPELINE_PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_pipeline_examples_validate(page: Path, tmp_path: Path) -> None:
    """Every whole pipeline in the docs passes `civflow validate` (includes resolved)."""
    written = project_for(page, tmp_path)
    pipelines = [path for block, path in written.items() if block.lang == "yaml"]
    assert pipelines
    done = civflow("validate", *pipelines, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


RECIPES = sorted(p for p in (DOCS / "recipes").glob("*.md")
                 if any(b.lang == "yaml" and not b.is_snippet for b in blocks(p)))


@pytest.mark.parametrize("page", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_on_the_emulator(page: Path, tmp_path: Path) -> None:
    """Each recipe's pipelines run with `civflow run --emulator` (previews, recorded under
    .civflow/previews); a second run would be all cached; the recipe's Python (the
    notebook) runs as written."""
    written = project_for(page, tmp_path)
    pipelines = [path for block, path in written.items() if block.lang == "yaml"]
    for pipeline in pipelines:
        done = civflow("run", "--emulator", pipeline, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert not pipeline.with_name(pipeline.stem + ".lock.json").exists()
        name = yaml.safe_load(pipeline.read_text(encoding="utf-8"))["name"]
        previews = list(tmp_path.rglob(f".civflow/previews/{name}.lock.json"))
        assert previews, f"{page.name}: no preview lockfile for {pipeline.name}"
        again = civflow("plan", pipeline, "--emulator", "--format", "json", cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert set(json.loads(again.stdout)["counts"]) == {"cached"}, again.stdout
    python = [block for block in blocks(page) if block.lang == "python"]
    if python:  # the recipe's Python reads what a real run committed
        with civitai_stand_in() as api:
            for pipeline in pipelines:
                done = civflow("run", "--yes", pipeline, cwd=tmp_path,
                               CIVITAI_BASE_URL=api.url, CIVITAI_API_KEY=STAND_IN_KEY)
                assert done.returncode == 0, done.stdout + done.stderr
    for block in python:
        if block.lang == "python":
            done = subprocess.run([sys.executable, "-c", block.body], cwd=tmp_path,
                                  env=_env(), text=True, capture_output=True, timeout=300,
                                  check=False)
            assert done.returncode == 0, f"{block.where}\n{done.stdout}{done.stderr}"


def test_sharing_recipe_round_trip(tmp_path: Path) -> None:
    """The sharing recipe as written: run, push; on a machine without the store or out/,
    pull restores every file and the plan is all cached (the remote is a local folder,
    given by CIVFLOW_REMOTE as the recipe says CI may do)."""
    page = DOCS / "recipes" / "sharing-artifacts.md"
    project = tmp_path / "project"
    written = project_for(page, project)
    assert (project / "civflow.toml").is_file()
    subprocess.run(["git", "init", "-q", str(project)], check=True, timeout=60)
    remote = {"CIVFLOW_REMOTE": (tmp_path / "remote").as_uri()}
    (pipeline,) = [path for block, path in written.items() if block.lang == "yaml"]
    # Paid work is what is shared: a run against (a stand-in for) the real API.
    with civitai_stand_in() as api:
        for args in (("run", "--yes", pipeline), ("push",)):
            done = civflow(*args, cwd=project, **remote, CIVITAI_BASE_URL=api.url,
                           CIVITAI_API_KEY=STAND_IN_KEY)
            assert done.returncode == 0, done.stdout + done.stderr
    made = sorted(p.relative_to(project) for p in (project / "out").rglob("*") if p.is_file())
    assert made
    shutil.rmtree(project / ".civflow")
    shutil.rmtree(project / "out")
    done = civflow("pull", cwd=project, **remote)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.relative_to(project) for p in (project / "out").rglob("*")
                  if p.is_file()) == made
    plan = civflow("plan", pipeline, "--format", "json", cwd=project, **remote)
    assert set(json.loads(plan.stdout)["counts"]) == {"cached"}, plan.stdout
