"""Make out/ match the lockfile from the local store: after a branch switch, a pull, a mess.

Nothing is submitted and nothing is asked of Civitai: what the local store lacks is
pulled from the team's remote when the project has one (verified before use), then out/
is restored by `restore_out`, the one restore `civflow pull` uses too; files civflow put
under `out/<pipeline>/` that the lockfile no longer names are removed, but only when
their bytes are in the store (so nothing a person made, or cannot get back, is ever
deleted).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from civflow.errors import RemoteError
from civflow.loading.model import PipelineSpec, project_root_for
from civflow.remote.sync import Restored, fetch_objects, restore_out, store_for
from civflow.store.integrity import StatCache
from civflow.store.lockfile import Lockfile
from civflow.store.objects import hash_file

__all__ = ["Checkout", "checkout"]


@dataclass
class Checkout:
    """What `checkout` did for one pipeline: out/ restored as a pull restores it, then
    what the lockfile no longer names removed."""

    out: Restored
    removed: list[Path] = field(default_factory=list)
    pulled: int = 0  # objects fetched from the remote first
    remote_problem: str | None = None  # why the remote could not help, if it was needed


def checkout(spec: PipelineSpec, out_dir: Path | None = None) -> Checkout:
    """Restore every artifact of the pipeline's lockfile into out/ from the store."""
    root = project_root_for(spec.path)
    out = (out_dir or root / "out") / spec.name
    store = store_for(root)
    lock = Lockfile.load(spec.lockfile_path)
    lacking = [a.sha256 for entry in (lock.instances if lock else {}).values()
               for a in entry.artifacts if not store.has(a.sha256)]
    pulled, problem = 0, None
    if lacking:
        try:
            pulled = len(fetch_objects(root, lacking).pulled)
        except RemoteError as exc:
            problem = exc.message
    cache = StatCache.for_store(store)
    done = Checkout(restore_out(spec, store, cache, out_dir), pulled=pulled,
                    remote_problem=problem)
    if out.is_dir():
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            if path.resolve() in done.out.named or path.name.startswith("."):
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
