"""`civflow lock merge|repair|install`: lockfiles that merge in git without losing paid work."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import click

from civflow.errors import CivflowError, FileAccessError, UsageError

_ATTRIBUTES = "*.lock.json merge=civflow"
_DRIVER = "civflow lock merge %O %A %B"


@click.group()
def lock() -> None:
    """Lockfiles in git: a merge driver, repair from run journals, installation."""


@lock.command()
@click.argument("base", type=click.Path(path_type=Path))
@click.argument("ours", type=click.Path(path_type=Path))
@click.argument("theirs", type=click.Path(path_type=Path))
def merge(base: Path, ours: Path, theirs: Path) -> None:
    """Merge two versions of a lockfile into OURS (git's %O %A %B), keeping every paid
    result: what both sides changed is kept, the older one among the alternates."""
    from civflow.store.lockfile import Lockfile
    from civflow.store.merge import merge as merged

    try:
        mine, other = Lockfile.load(ours), Lockfile.load(theirs)
        old = Lockfile.load(base) if base.stat().st_size else None
    except (CivflowError, OSError) as exc:
        # git then leaves the usual conflict; `civflow lock repair` rebuilds the file.
        raise click.ClickException(f"cannot merge {ours}: {exc}") from None
    if mine is None or other is None:
        raise click.ClickException(f"cannot merge {ours}: a side is missing")
    merged(old, mine, other).save(ours)


@lock.command()
@click.argument("file", type=click.Path(path_type=Path))
def repair(file: Path) -> None:
    """Rebuild FILE's lockfile from every run's journal and what it still holds (a
    conflicted or lost lockfile): nothing is submitted, nothing is paid."""
    from civflow.load import load_pipeline
    from civflow.runner.state import project_root
    from civflow.store.journal import pipeline_runs
    from civflow.store.lockfile import LockedInstance, Lockfile
    from civflow.store.merge import repair as rebuilt

    spec = load_pipeline(file)
    try:
        current = Lockfile.load(spec.lockfile_path)
    except CivflowError:
        current = None  # conflict markers or damage: rebuilt from the journals alone

    def finished() -> Iterator[LockedInstance]:
        for journal in reversed(pipeline_runs(project_root(spec) / ".civflow" / "runs",
                                              spec.name)):
            for record in journal.records():
                entry = record.get("entry")
                if record.get("event") in ("finished", "settled") and \
                        record.get("status") == "succeeded" and isinstance(entry, dict):
                    try:
                        yield LockedInstance.from_dict(entry)
                    except ValueError:
                        continue
    result = rebuilt(spec.name, current, finished())
    result.save(spec.lockfile_path)
    click.echo(f"{spec.lockfile_path}: {len(result.instances)} instances, "
               f"{len(result.alternates)} alternates")


@lock.command()
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              help="The git repository (default: the current folder).")
def install(repo: Path) -> None:
    """Make git merge lockfiles with `civflow lock merge` in this repository."""
    attributes = repo / ".gitattributes"
    try:
        text = attributes.read_text(encoding="utf-8") if attributes.exists() else ""
        if _ATTRIBUTES not in text.splitlines():
            attributes.write_text(text + ("" if not text or text.endswith("\n") else "\n")
                                  + _ATTRIBUTES + "\n", encoding="utf-8")
    except OSError as exc:
        raise FileAccessError(path=str(attributes), reason=exc.strerror or str(exc)) from exc
    for key, value in (("merge.civflow.name", "civflow lockfile merge"),
                       ("merge.civflow.driver", _DRIVER)):
        try:
            subprocess.run(["git", "config", key, value], cwd=repo, check=True,
                           capture_output=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise UsageError(f"{repo} is not a git repository (git config failed)",
                             hint="run it inside the repository, or pass --repo") from exc
    click.echo(f"lockfiles in {repo.resolve()} now merge with civflow lock merge")
