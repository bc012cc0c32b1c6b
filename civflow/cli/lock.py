"""`civflow lock repair|prune|merge|install`: lockfiles in git without losing paid work."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from civflow.errors import (
    CivflowError,
    Diagnostic,
    FileAccessError,
    Location,
    PipelineInvalid,
    UsageError,
)

if TYPE_CHECKING:
    from civflow.store.lockfile import LockedInstance

_ATTRIBUTES = "*.lock.json merge=civflow"
_DRIVER = "civflow lock merge %O %A %B"


@click.group()
def lock() -> None:
    """Lockfiles in git: repair after a conflicting merge, prune earlier results."""


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
    """Repair a pipeline's lockfile after a conflicting merge or damage: FILE is the
    pipeline or its lockfile.

    Both sides of every conflict git left are kept (the newer result current, the other
    as an earlier result), every well-formed entry of a damaged file is kept, and this
    machine's run journals add what they finished. It never writes fewer entries than
    the file visibly holds: when an entry line cannot be read it refuses, the file
    untouched. The file it replaces is copied to .civflow/backups first. Nothing is
    submitted, nothing is paid; it works the same in a clone with no journals.
    """
    from civflow.store.merge import repair as rebuilt
    from civflow.store.merge import salvage

    lock_path, name, root = _lockfile_of(file)
    try:
        text = lock_path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        raise FileAccessError(path=str(lock_path), reason=exc.strerror or str(exc)) from exc
    found = salvage(text)
    if found.broken:
        raise PipelineInvalid([Diagnostic(
            f"lock repair: this entry line cannot be read ({len(found.broken)} such "
            "line(s)); nothing was written", Location(str(lock_path), line, 1),
            source_line=_line(text, line)[:200],
            hint="fix the line by hand (it is one instance: removing it means that "
                 "instance is made, and paid for, again), then run lock repair again")
            for line in found.broken[:20]])
    salvaged = found.lockfile(name)
    name = salvaged.pipeline or name
    result = rebuilt(name, salvaged, _finished(root, name))
    kept = {e.fingerprint for e in (*result.instances.values(), *result.alternates.values())}
    lost = found.fingerprints - kept
    if lost:  # a guard on the joining above: every result read stays findable
        raise UsageError(f"lock repair: {len(lost)} of the results the file holds would not "
                         "be kept; nothing was written", hint=f"look at {lock_path} by hand")
    archive = _archive(root)
    for entry in result.alternates.values():
        archive.put(entry)  # earlier results past the file's bound stay findable here
    backup = _backup(root, lock_path, text) if text else None
    result.save(lock_path)
    click.echo(f"{lock_path}: {len(result.instances)} instances, "
               f"{min(len(result.alternates), _kept_earlier(result))} earlier results"
               + (f" ({found.conflicts} conflict(s) resolved keeping both sides)"
                  if found.conflicts else ""))
    for line in found.cut:
        click.echo(f"{lock_path}:{line}: this entry line was cut short and could not be kept: "
                   "its instance is planned again (a copy of the file is kept)", err=True)
    if backup is not None:
        click.echo(f"the file it replaced: {backup}")


@lock.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--keep", type=click.IntRange(0, 100), default=0, show_default=True,
              help="Earlier results to keep per instance (the newest).")
def prune(file: Path, keep: int) -> None:
    """Drop earlier results from FILE's lockfile (the pipeline or its lockfile): the
    other sides of old conflicts. They stay findable on this machine (.civflow/entries),
    so going back to one of them is still cached here; other clones pay for it again."""
    from civflow.store.lockfile import Lockfile, newest_first

    lock_path, _, root = _lockfile_of(file)
    lock = Lockfile.load(lock_path)
    if lock is None:
        raise UsageError(f"{lock_path}: no such lockfile")
    archive = _archive(root)
    by_instance: dict[str, list[Any]] = {}
    for entry in lock.alternates.values():
        archive.put(entry)
        by_instance.setdefault(entry.instance, []).append(entry)
    kept = {e.fingerprint: e for entries in by_instance.values()
            for e in sorted(entries, key=newest_first, reverse=True)[:keep]}
    Lockfile(lock.pipeline, lock.instances, lock.vars, kept).save(lock_path)
    click.echo(f"{lock_path}: {len(lock.alternates) - len(kept)} earlier result(s) "
               f"dropped, {len(kept)} kept")


def _lockfile_of(file: Path) -> tuple[Path, str, Path]:
    """(lockfile, pipeline name, project root) for a pipeline file or a lockfile."""
    from civflow.loading.model import project_root_for
    from civflow.names import lockfile_path_for

    if file.name.endswith(".lock.json"):
        stem = file.name.removesuffix(".lock.json")
        pipeline = next((file.with_name(stem + s) for s in (".yaml", ".yml")
                         if file.with_name(stem + s).is_file()), None)
        lock_path = file
    else:
        pipeline, lock_path = file, lockfile_path_for(file)
        stem = file.stem
    name = stem
    if pipeline is not None:
        from civflow.loading import load_pipeline

        name = load_pipeline(pipeline).name
    return lock_path, name, project_root_for(lock_path)


def _finished(root: Path, name: str) -> Iterator[LockedInstance]:
    """Entries this machine's runs finished (none in a fresh clone), oldest first."""
    from civflow.store.journal import pipeline_runs
    from civflow.store.lockfile import LockedInstance

    for journal in reversed(pipeline_runs(root / ".civflow" / "runs", name)):
        for record in journal.records():
            entry = record.get("entry")
            if record.get("event") in ("finished", "settled") and \
                    record.get("status") == "succeeded" and isinstance(entry, dict):
                try:
                    yield LockedInstance.from_dict(entry)
                except ValueError:
                    continue


def _archive(root: Path) -> Any:
    from civflow.store.archive import EntryArchive

    return EntryArchive(root / ".civflow" / "entries")


def _backup(root: Path, lock_path: Path, text: str) -> Path:
    from datetime import UTC, datetime

    from civflow.store.atomic import atomic_write_text

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    backup = root / ".civflow" / "backups" / f"{lock_path.name}.{stamp}"
    backup.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(backup, text)
    return backup


def _kept_earlier(lock: Any) -> int:
    from civflow.store.lockfile import MAX_EARLIER

    per: dict[str, int] = {}
    for entry in lock.alternates.values():
        per[entry.instance] = per.get(entry.instance, 0) + 1
    return sum(min(n, MAX_EARLIER) for n in per.values())


def _line(text: str, number: int) -> str:
    lines = text.splitlines()
    return lines[number - 1] if 0 < number <= len(lines) else ""


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
