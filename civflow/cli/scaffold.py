"""`civflow init` and `civflow schema`: a starter repository, and the editor schema."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath

import click

from civflow.errors import FileAccessError, UsageError

# git is bounded like everything else: a hung credential helper must not hang init.
_GIT_TIMEOUT = 60


@click.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the schema to FILE instead of printing it.")
def schema(output: Path | None) -> None:
    """Print the JSON Schema editors use for pipeline files: every step type, and per
    type and engine every field with its type, allowed values and bounds.

    `civflow init` and `civflow install` link it as .civflow/editor-schema.json, which
    pipelines name in a first line such as
    `# yaml-language-server: $schema=../.civflow/editor-schema.json`; the link follows
    upgrades. `--output FILE` writes a copy, for editors configured otherwise.
    """
    from civflow.scaffold import editor_schema_text

    text = editor_schema_text()
    if output is None:
        click.echo(text, nl=False)
        return
    _write(output, text)
    click.echo(f"wrote {output}", err=True)


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--hooks/--no-hooks", default=None,
              help="Install a git post-checkout hook that runs `civflow checkout` after a "
                   "branch switch (asked when run on a terminal; default: no).")
@click.option("--install", "install", metavar="SPEC",
              help="What the GitHub workflow's `pip install` lines install: a pip "
                   "requirement such as 'civflow[s3]==1.2.0', or a pinned repository "
                   "'git+https://github.com/OWNER/REPO@COMMIT' (default: what this civflow "
                   "was installed from, pinned: its repository and commit when it came from "
                   "git or a clone, else civflow==THIS VERSION from the package index).")
def init(directory: Path, hooks: bool | None, install: str | None) -> None:
    """Start a civflow repository in DIRECTORY (default: here): an example pipeline whose
    first line points editors at the editor schema, .gitignore entries, a GitHub Actions
    workflow and a pre-commit config (and, with --hooks, the post-checkout hook that
    `civflow install` sets up in every other clone); every file written is listed.
    Existing files are never overwritten. The editor schema is not copied into the
    repository: .civflow/editor-schema.json (ignored) links to this civflow's.

    A plain folder becomes a git repository. Inside an existing repository the workflow
    and the pre-commit config go to its top, where GitHub and pre-commit read them.
    """
    from civflow.scaffold.starter import (
        GITIGNORE_LINES,
        InstallSpecInvalid,
        appended,
        install_requirement,
        missing_lines,
        starter_files,
    )

    try:
        requirement = install_requirement(install if install is not None else _installed_from())
    except InstallSpecInvalid as exc:
        raise UsageError(f"--install: {exc}", hint=exc.hint) from exc
    project = directory.resolve()
    if project.exists() and not project.is_dir():
        raise UsageError(f"{directory} is not a folder")
    root = _git_root(project)
    if hooks is None:
        hooks = sys.stdin.isatty() and sys.stdout.isatty() and click.confirm(
            "Install a git post-checkout hook that restores out/ after a branch switch?",
            default=True)
    relative = PurePosixPath(project.relative_to(root).as_posix()) if root else PurePosixPath(".")
    files = starter_files(relative, hook=hooks, install=requirement)
    top = root or project
    # A new repository's hooks folder is known once it exists (core.hooksPath may move it).
    bases = {"project": project, "root": top,
             "hooks": _hooks_dir(project) if hooks and root else None}
    targets = [(bases[f.where], f) for f in files]
    existing = [base / f.path for base, f in targets
                if base is not None and ((base / f.path).exists() or (base / f.path).is_symlink())]
    if existing:
        names = ", ".join(_shown(p) for p in existing)
        raise UsageError(f"refusing to overwrite {names}",
                         hint="civflow init only creates files: move these away, or start "
                              "in another folder")
    project.mkdir(parents=True, exist_ok=True)
    if root is None:
        _git(project, "init", "-q")
        click.echo(f"initialised a git repository in {_shown(project)}")
    for base, file in targets:
        if base is None:
            base = _hooks_dir(project)
            if (base / file.path).exists():
                click.echo(f"not installing the hook: {_shown(base / file.path)} exists "
                           "(git's core.hooksPath)", err=True)
                continue
        path = base / file.path
        _write(path, file.text, executable=file.executable)
        click.echo(f"created {_shown(path)}")
    gitignore = project / ".gitignore"
    current = _read(gitignore)
    lines = missing_lines(current, GITIGNORE_LINES)
    if lines:
        _write(gitignore, appended(current, lines))
        click.echo(f"{'updated' if current else 'created'} {_shown(gitignore)}: "
                   f"{', '.join(lines)}")
    click.echo(_link_schema(project))
    click.echo(f"the workflow installs {requirement} (change it with --install; see "
               "docs/guide/ci.md)")
    steps = [] if project == Path.cwd().resolve() else [f"cd {_shown(project)}"]
    steps += ["civflow run --emulator pipelines/hello.yaml   # try it, no account needed",
              "civflow install                               # in every other clone: hook, "
              "editor schema",
              "pre-commit install                            # validate pipelines on commit",
              "on GitHub, set the secret CIVITAI_API_KEY and the variable CIVFLOW_MAX_COST"]
    click.echo("\nnext:\n" + "\n".join(f"  {line}" for line in steps))


def _installed_from() -> str | None:
    """A pinned requirement for what this civflow was installed from (`pinned_source`
    of pip's PEP 610 record), or None: the index version."""
    import json
    from importlib import metadata

    try:
        record = metadata.distribution("civflow").read_text("direct_url.json")
        direct = json.loads(record) if record else {}
    except (metadata.PackageNotFoundError, ValueError):
        return None
    return pinned_source(direct) if isinstance(direct, dict) else None


def pinned_source(direct: dict[str, object]) -> str | None:
    """`git+URL@COMMIT` for a PEP 610 record of a git install, or of an editable install
    from a clone whose `origin` is a public https (or GitHub ssh) URL: what CI can
    install again. None for anything else (a local path CI cannot reach)."""
    vcs, url = direct.get("vcs_info"), direct.get("url")
    if isinstance(vcs, dict) and vcs.get("vcs") == "git" and isinstance(url, str):
        commit = vcs.get("commit_id")
        return f"git+{url}@{commit}" if isinstance(commit, str) and commit else None
    if not (isinstance(url, str) and url.startswith("file://")):
        return None
    clone = Path(url.removeprefix("file://"))
    try:
        origin = _git(clone, "remote", "get-url", "origin").strip()
        commit = _git(clone, "rev-parse", "HEAD").strip()
    except (UsageError, OSError):
        return None
    if origin.startswith("git@github.com:"):
        origin = "https://github.com/" + origin.removeprefix("git@github.com:")
    if not origin.startswith("https://") or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None  # a local path or a private scheme: CI could not reach it
    return f"git+{origin}@{commit}"


@click.command()
@click.argument("directory", required=False, default=Path("."),
                type=click.Path(file_okay=False, path_type=Path))
def install(directory: Path) -> None:
    """Set up this clone of a civflow repository: the post-checkout hook that makes out/
    match the lockfiles after a branch switch, and .civflow/editor-schema.json, the link
    to this civflow's editor schema that pipelines' modelines name. Run it once per clone
    (and after moving civflow to another environment); running it again changes nothing.
    Lockfiles need no setup: plain git merges them.

    DIRECTORY is the civflow project (the folder with pipelines/; default: here).
    """
    from civflow.scaffold.starter import starter_files

    project = directory.resolve()
    root = _git_root(project)
    if root is None:
        raise UsageError(f"{directory} is not inside a git repository",
                         hint="run it in a clone; `civflow init` starts a new repository")
    relative = PurePosixPath(project.relative_to(root).as_posix())
    (hook,) = [f for f in starter_files(relative, hook=True) if f.where == "hooks"]
    path = _hooks_dir(project) / hook.path
    current = _read(path) if path.exists() else None
    click.echo(_link_schema(project))
    if current == hook.text:
        click.echo(f"{_shown(path)}: already installed")
        return
    if current is not None:
        raise UsageError(f"{_shown(path)} exists and is not civflow's hook; left as it is",
                         hint="add `civflow checkout` to it by hand, or move it away and run "
                              "civflow install again")
    _write(path, hook.text, executable=True)
    click.echo(f"installed {_shown(path)}: after a branch switch, out/ matches the "
               "checked-out lockfiles (from the store or the remote; nothing is paid)")


# -- files and git ---------------------------------------------------------------------------


def _link_schema(project: Path) -> str:
    """Make `project`/.civflow/editor-schema.json a link to this civflow's editor schema
    (a copy where the file system has no links); say what was done, as init and install
    print it."""
    from civflow.scaffold import editor_schema_path, editor_schema_text
    from civflow.scaffold.starter import SCHEMA_FILE

    target = project / SCHEMA_FILE
    source = editor_schema_path()
    if target.is_symlink() and Path(os.readlink(target)) == source:
        return f"{_shown(target)}: already linked to this civflow's editor schema"
    tmp = target.with_name(f".{target.name}.civflow-tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        try:
            tmp.symlink_to(source)
            linked = True
        except OSError:  # e.g. Windows without the right to make links
            tmp.write_text(editor_schema_text(), encoding="utf-8")
            linked = False
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FileAccessError(path=str(target), reason=exc.strerror or str(exc)) from exc
    if linked:
        return (f"linked {_shown(target)} -> {source} (the editor schema of this civflow; "
                "ignored, not committed)")
    return (f"created {_shown(target)}: a copy of this civflow's editor schema (no links "
            "here; run civflow install again after upgrading)")


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise FileAccessError(path=str(path), reason=str(exc)) from exc


def _write(path: Path, text: str, *, executable: bool = False) -> None:
    """Write through a temporary file and a rename, so no half-written file is left."""
    tmp = path.with_name(f".{path.name}.civflow-tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        if executable:
            tmp.chmod(0o755)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc


def _git(cwd: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=_GIT_TIMEOUT, check=True)
    except FileNotFoundError as exc:
        raise UsageError("git is not installed",
                         hint="civflow init sets up a git repository: install git") from exc
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"git {args[0]} did not answer in {_GIT_TIMEOUT} s") from exc
    except subprocess.CalledProcessError as exc:
        raise UsageError(f"git {args[0]} failed: {exc.stderr.strip()[:300]}") from exc
    return done.stdout.strip()


def _git_root(folder: Path) -> Path | None:
    """The top of the git work tree holding `folder` (or its nearest existing parent)."""
    probe = folder
    while not probe.is_dir():
        probe = probe.parent
    try:
        return Path(_git(probe, "rev-parse", "--show-toplevel")).resolve()
    except UsageError as exc:
        if "not installed" in str(exc):
            raise
        return None


def _hooks_dir(folder: Path) -> Path:
    """Where git runs hooks from (core.hooksPath when set)."""
    probe = folder
    while not probe.is_dir():
        probe = probe.parent
    path = Path(_git(probe, "rev-parse", "--git-path", "hooks"))
    return path if path.is_absolute() else (probe / path).resolve()
