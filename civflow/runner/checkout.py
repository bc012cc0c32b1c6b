"""Make out/ match the lockfile from the local store: after a branch switch, a pull, a mess.

Nothing is submitted and nothing is asked of Civitai: every file the lockfile names is
copied back from the content store, after pulling what the store lacks from the team's
remote when the project has one (verified before use); files civflow put under
`out/<pipeline>/` that the lockfile no longer names are removed, but only when their
bytes are in the store (so nothing a person made, or cannot get back, is ever deleted).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from civflow.errors import RemoteError, UnsafePath
from civflow.load.model import PipelineSpec
from civflow.remote import fetch_objects
from civflow.runner.state import object_store, project_root, stat_cache
from civflow.store.integrity import check_artifacts, restore_artifact
from civflow.store.lockfile import Lockfile
from civflow.store.objects import hash_file

__all__ = ["Checkout", "checkout"]


@dataclass
class Checkout:
    """What `checkout` did for one pipeline."""

    pipeline: str
    restored: list[Path] = field(default_factory=list)
    unchanged: int = 0
    removed: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # instance: why, not in the store
    pulled: int = 0  # objects fetched from the remote first
    remote_problem: str | None = None  # why the remote could not help, if it was needed


def checkout(spec: PipelineSpec, out_dir: Path | None = None) -> Checkout:
    """Restore every artifact of the pipeline's lockfile into out/ from the store."""
    root = project_root(spec)
    out = (out_dir or root / "out") / spec.name
    store = object_store(spec)
    cache = stat_cache(store)
    done = Checkout(spec.name)
    lock = Lockfile.load(spec.lockfile_path)
    lock_dir = spec.lockfile_path.parent
    entries = sorted((lock.instances if lock else {}).items())
    lacking = [a.sha256 for _, entry in entries for a in entry.artifacts
               if not store.has(a.sha256)]
    if lacking:
        try:
            done.pulled = len(fetch_objects(root, lacking).pulled)
        except RemoteError as exc:
            done.remote_problem = exc.message
    wanted: set[Path] = set()
    for name, entry in entries:
        for status in check_artifacts(entry.artifacts, lock_dir, store, cache):
            wanted.add(status.out_path.resolve())
            if status.ok:
                done.unchanged += 1
            elif status.restorable:
                try:
                    restore_artifact(status, store, cache, out_dir=out)
                except UnsafePath:
                    done.missing.append(f"{name}: {status.artifact.path} lies outside "
                                        f"{out} (written with another --out?)")
                    continue
                done.restored.append(status.out_path)
            else:
                done.missing.append(f"{name}: {status.artifact.path} is neither in the "
                                    "local store nor on a remote (civflow run downloads it "
                                    "again by blob id, without paying)")
    if out.is_dir():
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            if path.resolve() in wanted or path.name.startswith("."):
                continue
            with contextlib.suppress(OSError):
                if store.has(hash_file(path)):
                    path.unlink()
                    done.removed.append(path)
        for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only empty ones go
    cache.save()
    return done
