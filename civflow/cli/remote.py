"""`civflow push` and `civflow pull`: share the lockfiles' artifacts through a remote."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from civflow.errors import RemoteCorrupt, RemoteError, UsageError


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


class _Bar:
    """A byte progress bar on stderr, shown only on a terminal (civflow.remote.Progress)."""

    def __init__(self, label: str) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True)
        self.label = label
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), console=console,
                            disable=not console.is_terminal, transient=True)
        self.task: Any = None

    def start(self, objects: int, size: int) -> None:
        self.task = self.bar.add_task(f"{self.label} {objects} object(s)", total=size)

    def advance(self, size: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, size)


@contextmanager
def _bar(label: str) -> Iterator[_Bar]:
    bar = _Bar(label)
    with bar.bar:
        yield bar


def _files(paths: Sequence[Path]) -> list[Path]:
    from civflow.loading.discover import pipeline_files

    files = pipeline_files(paths)
    if not files:
        raise UsageError("no pipeline files found", hint="name files, folders or globs")
    return files


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--jobs", "-j", type=click.IntRange(1, 256), metavar="N",
              help="Transfers in flight (default: the remote's `jobs`, 16).")
def push(paths: tuple[Path, ...], jobs: int | None) -> None:
    """Upload the artifacts the lockfiles name to the project's remote.

    Objects the remote already has are skipped by listing, without reading them. The
    remote is `[remote] url` in civflow.toml (or `[tool.civflow.remote]` in
    pyproject.toml), or $CIVFLOW_REMOTE. PATHS are pipeline files, folders or globs
    (default: every pipeline under the current folder).
    """
    from civflow.remote import projects_of, push_pipelines
    from civflow.remote.sync import open_remote

    missing = 0
    for project in projects_of(_files(paths)):
        remote = open_remote(project)
        if jobs is not None:
            remote.jobs = jobs
        began = time.monotonic()
        with _bar("push") as bar:
            done = push_pipelines(project, remote, progress=bar)
        took = time.monotonic() - began
        click.echo(f"{remote.url}: pushed {len(done.done)} object(s) ({_mb(done.bytes)}), "
                   f"{len(done.skipped)} already there, in {took:.1f} s")
        if done.repaired:
            click.echo(f"  replaced {len(done.repaired)} remote object(s) whose size was "
                       f"wrong: {', '.join(done.repaired[:5])}", err=True)
        for sha in done.missing:
            click.echo(f"  not pushed: {sha} is not in the local store (run `civflow run` "
                       "or `civflow pull` first)", err=True)
        for sha in done.corrupt:
            click.echo(f"  not pushed: the local copy of {sha} is corrupt (`civflow run` "
                       "downloads it again)", err=True)
        missing += len(done.missing) + len(done.corrupt)
    if missing:
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--jobs", "-j", type=click.IntRange(1, 256), metavar="N",
              help="Transfers in flight (default: the remote's `jobs`, 16).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Where outputs are restored (default: out/ next to .civflow/).")
def pull(paths: tuple[Path, ...], jobs: int | None, out_dir: Path | None) -> None:
    """Download the artifacts the lockfiles name from the remote, and restore out/.

    Every object is hashed before it enters the local store; one whose bytes do not
    match its name is reported and left out. PATHS are pipeline files, folders or globs
    (default: every pipeline under the current folder).
    """
    from civflow.remote import projects_of, pull_pipelines
    from civflow.remote.sync import open_remote

    problems = 0
    for project in projects_of(_files(paths)):
        remote = open_remote(project)
        if jobs is not None:
            remote.jobs = jobs
        began = time.monotonic()
        with _bar("pull") as bar:
            done, restored = pull_pipelines(project, remote, out_dir=out_dir,
                                            progress=bar)
        took = time.monotonic() - began
        click.echo(f"{remote.url}: pulled {len(done.done)} object(s) ({_mb(done.bytes)}), "
                   f"{len(done.skipped)} already here, in {took:.1f} s")
        for one in restored:
            click.echo(f"{one.pipeline}: {len(one.restored)} restored, "
                       f"{one.unchanged} unchanged")
            for line in one.missing:
                click.echo(f"  not restored: {line}", err=True)
            problems += len(one.missing)
        for sha in done.missing:
            click.echo(f"  not on the remote: {sha}", err=True)
        if done.corrupt:
            raise RemoteCorrupt(
                url=remote.url, objects=[remote.key_for(sha) for sha in done.corrupt],
                hint="they were not used; delete them from the remote and push again from "
                     "a machine that has good copies")
    if problems:
        raise click.exceptions.Exit(1)


def push_target(file: Path, push: bool) -> Path | None:
    """Before `civflow run`: the project root whose remote the run will push to (with
    `--push`, or `push = true` in its config), or None. `--push` without a remote is a
    usage error, raised before anything is spent."""
    from civflow.loading.model import project_root_for
    from civflow.remote import load_config

    root = project_root_for(file.resolve())
    config = load_config(root)
    if config is None and push:
        raise UsageError(f"{root}: --push, but no remote is configured",
                         hint='add [remote] url = "s3://bucket/prefix" to civflow.toml at '
                              "the project's root, or set CIVFLOW_REMOTE")
    return root if config is not None and (push or config.push) else None


def push_after_run(root: Path, file: Path, result: Any) -> bool:
    """After `civflow run`: upload the objects its instances name that the remote lacks.

    False, after saying why, when the push failed: the run's results are in the
    lockfile and the local store all the same, and `civflow push FILE` sends them later.
    """
    from civflow.remote import Remote, load_config, store_for

    shas = {a.sha256 for r in result.results.values()
            if r.status in ("succeeded", "cached") for a in r.artifacts}
    config = load_config(root)
    if config is None:
        return True
    try:
        remote = Remote(config)
        began = time.monotonic()
        with _bar("push") as bar:
            done = remote.push_from(store_for(root), shas, progress=bar)
    except RemoteError as exc:
        from civflow.cli._exit import render_error

        click.echo(render_error(exc), err=True)
        click.echo(f"the push failed, the run did not: its results are in "
                   f"{result.lockfile or 'the lockfile'} and the local store, nothing is "
                   f"lost; send them later with: civflow push {file}", err=True)
        return False
    click.echo(f"{remote.url}: pushed {len(done.done)} object(s) ({_mb(done.bytes)}), "
               f"{len(done.skipped)} already there, in {time.monotonic() - began:.1f} s",
               err=True)
    for sha in done.missing + done.corrupt:
        click.echo(f"  not pushed: {sha} is missing or corrupt in the local store", err=True)
    return not done.missing and not done.corrupt

