"""The files `civflow init` writes: a starter pipeline, the editor schema, CI and hooks.

Pure: `starter_files` says what goes where (paths relative to the project folder or the
repository root) and `missing_lines` what a line-based file still lacks; the command
line does the writing, the refusing and the git work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from civflow.scaffold.editor import editor_schema_text

SCHEMA_FILE = ".civflow-schema.json"
PIPELINE_FILE = "pipelines/hello.yaml"
WORKFLOW_FILE = ".github/workflows/civflow.yml"
PRE_COMMIT_FILE = ".pre-commit-config.yaml"
GITIGNORE_LINES = (".civflow/", "out/")


@dataclass(frozen=True)
class StarterFile:
    """One file to create: its path under `where` (the project's folder, the repository's
    top, or git's hooks folder), its text, and whether it is a program (a git hook)."""

    path: str
    text: str
    where: str = "project"  # "project" | "root" | "hooks"
    executable: bool = False


def _template(name: str) -> str:
    return resources.files("civflow.scaffold").joinpath("templates", name).read_text("utf-8")


def _fill(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    if "@@" in text:
        raise ValueError(f"a template placeholder is left: {text[text.index('@@'):][:40]!r}")
    return text


def starter_files(project: PurePosixPath, *, hook: bool) -> list[StarterFile]:
    """What `civflow init` creates. `project` is the project's folder relative to the
    repository root (`.` when they are the same): GitHub and pre-commit read their
    files at the root, so those point into the project from there."""
    prefix = "" if str(project) == "." else f"{project}/"
    pipelines = f"{prefix}pipelines"
    modeline = "/".join([".."] * (len(PurePosixPath(PIPELINE_FILE).parts) - 1) + [SCHEMA_FILE])
    files = [
        StarterFile(PIPELINE_FILE, _fill(_template("hello.yaml"), SCHEMA=modeline,
                                         PIPELINE=PIPELINE_FILE)),
        StarterFile(SCHEMA_FILE, editor_schema_text()),
        StarterFile(WORKFLOW_FILE, _fill(_template("civflow.yml"),
                                         PIPELINES=json.dumps(pipelines)), where="root"),
        # Single-quoted YAML: a backslash is itself, a quote is doubled.
        StarterFile(PRE_COMMIT_FILE, _fill(
            _template("pre-commit-config.yaml"),
            FILES="'" + f"^{re.escape(pipelines)}/.*\\.ya?ml$".replace("'", "''") + "'"),
            where="root"),
    ]
    if hook:
        files.append(StarterFile("post-checkout", _fill(
            _template("post-checkout"), DIR=_shell_word(prefix.rstrip("/") or ".")),
            where="hooks", executable=True))
    return files


def _shell_word(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def missing_lines(text: str, wanted: tuple[str, ...] = GITIGNORE_LINES) -> list[str]:
    """The lines of `wanted` a line-based file (.gitignore) does not hold yet; a line
    counts as present with or without its trailing slash or a leading one."""
    have = {line.strip().strip("/") for line in text.splitlines()}
    return [line for line in wanted if line.strip("/") not in have]


def appended(text: str, lines: list[str]) -> str:
    """`text` with `lines` added at its end, each on its own line."""
    if not lines:
        return text
    joiner = "" if not text or text.endswith("\n") else "\n"
    return text + joiner + "\n".join(lines) + "\n"
