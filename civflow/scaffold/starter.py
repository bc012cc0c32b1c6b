"""The files `civflow init` writes: a starter pipeline, CI and hooks.

Pure: `starter_files` says what goes where (paths relative to the project folder or the
repository root) and `missing_lines` what a line-based file still lacks; the command
line does the writing, the refusing and the git work.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath
from urllib.parse import urlsplit

import yaml

from civflow import __version__

# The editor schema, as pipelines' modelines name it: a link (under the ignored
# .civflow/) to the schema of the civflow installed here, made by `init` and by
# `civflow install` in every clone. Nothing is committed: 1.2 MB per repository was the
# price of a copy, and a copy of another version can disagree with `civflow validate`.
SCHEMA_FILE = ".civflow/editor-schema.json"
PIPELINE_FILE = "pipelines/hello.yaml"
WORKFLOW_FILE = ".github/workflows/civflow.yml"
PRE_COMMIT_FILE = ".pre-commit-config.yaml"
# The local store, journals and previews; the outputs; the review page `civflow report
# --out report` writes (12 MB for 40 instances: never meant to be committed).
GITIGNORE_LINES = (".civflow/", "out/", "report/")
# What the workflow installs unless told otherwise: this very version, from the index.
DEFAULT_INSTALL = f"civflow=={__version__}"
VCS_SCHEMES = ("git+", "hg+", "svn+", "bzr+")
# Never in a requirement, and each one would change what a `run:` line does: the shell's
# command separators, substitutions, quotes and escapes, and Actions' `${{ }}`. The
# comparisons < > of a version range are allowed: the line is shell-quoted.
_FORBIDDEN = set("`$;|&()\\'\"{}")
# A requirement that starts with a project name: `name`, `name[extras]`, then a version
# specifier, ` @ URL`, or nothing.
_NAMED = re.compile(r"([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:\[[^\]]*\])?\s*"
                    r"(?:[<>=!~@]|$)")


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


class InstallSpecInvalid(ValueError):
    """`civflow init --install SPEC` names something pip cannot be told to install
    safely from a workflow line."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def install_requirement(spec: str | None) -> str:
    """The requirement the workflow's `pip install` lines install: `civflow==VERSION`
    by default, else `spec` as given (any pip requirement: a version, a range, extras,
    `civflow @ URL`, a wheel's URL or path). A bare VCS URL (`git+https://...@REF`)
    becomes `civflow @ git+https://...@REF`, and must name its commit or tag.
    Raises InstallSpecInvalid for more than one line, a shell metacharacter, a pip
    option, or a project other than civflow."""
    vcs_hint = ("give the repository and the commit: "
                "--install 'git+https://github.com/OWNER/REPO@COMMIT'")
    if spec is None:
        return DEFAULT_INSTALL
    if spec.strip() == "git":
        raise InstallSpecInvalid("'git' needs the repository's URL and commit", vcs_hint)
    if any(c in spec for c in "\r\n"):
        raise InstallSpecInvalid("the install requirement must be one line",
                                 "give one requirement, such as civflow==" + __version__)
    requirement = " ".join(spec.split())
    if "@@" in requirement:  # a template placeholder's marker, and never in a URL
        raise InstallSpecInvalid("the install requirement holds '@@'", vcs_hint)
    bad = sorted({c for c in requirement if c in _FORBIDDEN or not c.isprintable()})
    if bad:
        raise InstallSpecInvalid(
            f"the install requirement holds {' '.join(map(repr, bad))}: not in a "
            "workflow's shell line",
            "give the requirement alone, such as civflow==" + __version__ +
            " (environment markers are not supported here)")
    if not requirement:
        raise InstallSpecInvalid("the install requirement is empty",
                                 "leave --install out for civflow==" + __version__)
    if requirement.startswith("-"):
        raise InstallSpecInvalid(f"{requirement!r} is a pip option, not a requirement",
                                 "give what to install, such as civflow==" + __version__)
    if requirement.startswith(VCS_SCHEMES):
        if "@" not in urlsplit(requirement.split("+", 1)[1]).path:
            raise InstallSpecInvalid(
                "a VCS URL without @REF installs whatever its branch holds on each run",
                vcs_hint)
        return f"civflow @ {requirement}"
    named = _NAMED.match(requirement)
    if named and re.sub(r"[-_.]+", "-", named[1]).lower() != "civflow":
        raise InstallSpecInvalid(f"{requirement!r} does not install civflow",
                                 "name civflow, such as civflow==" + __version__)
    return requirement


def _yaml_quoted(text: str) -> str:
    """A single-quoted YAML scalar: a backslash is itself, a quote is doubled."""
    return "'" + text.replace("'", "''") + "'"


def install_command(requirement: str) -> str:
    """The `run:` value of the workflow's install steps: `pip install` and the
    requirement as one shell word, YAML-quoted only where a plain scalar would not
    read back the same (a ` #` or `: ` in it)."""
    line = f"pip install {shlex.quote(requirement)}"
    if yaml.safe_load(f"run: {line}") == {"run": line}:
        return line
    return json.dumps(line)


def starter_files(project: PurePosixPath, *, hook: bool,
                  install: str = DEFAULT_INSTALL) -> list[StarterFile]:
    """What `civflow init` creates. `project` is the project's folder relative to the
    repository root (`.` when they are the same): GitHub and pre-commit read their
    files at the root, so those point into the project from there. `install` is the
    requirement the workflow installs (see `install_requirement`)."""
    prefix = "" if str(project) == "." else f"{project}/"
    pipelines = f"{prefix}pipelines"
    modeline = "/".join([".."] * (len(PurePosixPath(PIPELINE_FILE).parts) - 1) + [SCHEMA_FILE])
    files = [
        StarterFile(PIPELINE_FILE, _fill(_template("hello.yaml"), SCHEMA=modeline,
                                         PIPELINE=PIPELINE_FILE)),
        StarterFile(WORKFLOW_FILE, _fill(_template("civflow.yml"),
                                         PIPELINES=json.dumps(pipelines),
                                         INSTALL=install_command(install)), where="root"),
        # Single-quoted YAML: a backslash is itself, a quote is doubled.
        StarterFile(PRE_COMMIT_FILE, _fill(
            _template("pre-commit-config.yaml"),
            PIPELINES=_shell_word(pipelines),
            FILES=_yaml_quoted(f"^{re.escape(prefix)}"),
            EXCLUDE=_yaml_quoted(f"^{re.escape(prefix)}(out|report|\\.civflow)/")),
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
