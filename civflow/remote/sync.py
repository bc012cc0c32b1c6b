"""Push and pull what pipelines' lockfiles name, and put pulled outputs back into out/.

A pipeline's lockfile travels with git, its pictures do not: `push_pipelines` uploads the
objects its entries name (current entries, and paid-for alternates this machine still
has), `pull_pipelines` downloads those the local store lacks and restores every out/
file the lockfile names from the store, so a fresh clone plans everything as cached.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from civflow.errors import FileAccessError, RemoteCorrupt, UnsafePath, UsageError
from civflow.loading import load_pipeline
from civflow.loading.model import PipelineSpec, project_root_for
from civflow.remote.config import load_config
from civflow.remote.storage import Progress, Remote, Transfer
from civflow.store.integrity import StatCache, check_artifacts, restore_artifact
from civflow.store.lockfile import Artifact, Lockfile
from civflow.store.objects import ObjectStore

__all__ = [
    "Fetched",
    "Project",
    "Restored",
    "fetch_objects",
    "projects_of",
    "pull_pipelines",
    "push_pipelines",
    "remote_for",
    "store_for",
]


def store_for(root: Path) -> ObjectStore:
    """The project's local store, `<root>/.civflow/objects` (as `civflow run` uses it)."""
    return ObjectStore(root / ".civflow" / "objects")


def remote_for(root: Path) -> Remote | None:
    """The remote configured for the project at `root`, opened; None when there is none.

    For the planner and the executor: call it once per run with `project_root(spec)`;
    `remote.config.push` says whether the project asks `run` to push what it produced.
    """
    config = load_config(root)
    return Remote(config) if config is not None else None


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Fetched(dict[str, Path]):
    """`fetch_objects`'s answer: sha256 -> path of the object in the local store, for
    each object available now; `missing` and `corrupt` say why the others are not."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: list[str] = []   # neither here nor on the remote (or no remote)
        self.corrupt: list[str] = []   # on the remote, but its bytes do not match its name
        self.pulled: list[str] = []    # downloaded (and verified) by this call


def fetch_objects(project_root: Path, shas: Iterable[str], *,
                  progress: Progress | None = None) -> Fetched:
    """Make the objects `shas` available in the project's local store, pulling from its
    remote those the store lacks; returns `{sha256: path in the store}` for each one
    that is available.

    For whoever needs artifacts a lockfile names without running anything (`report
    --base` reads the base branch's pictures this way). `project_root` is the project's
    root folder, or one of its pipeline files (its root is then found as `civflow run`
    finds it). The local store is
    `<project_root>/.civflow/objects`; the remote is the project's configured one
    (civflow.toml, `[tool.civflow]`, `$CIVFLOW_REMOTE`). Pulled bytes are hashed before
    they enter the store; a remote object that does not match its name is left out
    (listed in `.corrupt`, never adopted). Without a remote only local objects are
    returned. Strings that are not sha256 hex digests are listed as missing. Raises
    `RemoteError` (`RemoteUnreachable`, `RemoteAccessDenied`) when the configured remote
    cannot be used, and a located `PipelineInvalid` for a bad config file.
    """
    root = Path(project_root)
    if root.is_file():
        root = project_root_for(root)
    store = store_for(root)
    result = Fetched()
    need: list[str] = []
    for sha in dict.fromkeys(shas):
        if not isinstance(sha, str) or not _SHA256.match(sha):
            result.missing.append(str(sha))
        elif store.has(sha):
            result[sha] = store.path_for(sha)
        else:
            need.append(sha)
    if not need:
        return result
    remote = remote_for(root)
    if remote is None:
        result.missing.extend(need)
        return result
    transfer = remote.pull_into(store, need, progress=progress)
    result.pulled.extend(transfer.done)
    result.corrupt.extend(transfer.corrupt)
    result.missing.extend(transfer.missing)
    for sha in need:
        if sha in transfer.done or sha in transfer.skipped:
            result[sha] = store.path_for(sha)
    return result


def corrupt_error(remote: Remote, shas: Sequence[str]) -> RemoteCorrupt:
    """The error for remote objects whose bytes do not match their names."""
    return RemoteCorrupt(
        url=remote.url, objects=[remote.key_for(sha) for sha in shas],
        hint="they were not used; delete them from the remote and push again from a "
             "machine that has good copies")


@dataclass
class Project:
    """The pipelines of one project root (one store, one remote) given to push or pull."""

    root: Path
    specs: list[PipelineSpec] = field(default_factory=list)

    @property
    def store(self) -> ObjectStore:
        return store_for(self.root)


def projects_of(files: Iterable[Path]) -> list[Project]:
    """Pipeline files grouped by project root, in the order first seen."""
    by_root: dict[Path, Project] = {}
    for file in files:
        spec = load_pipeline(file)
        root = project_root_for(spec.path)
        by_root.setdefault(root, Project(root)).specs.append(spec)
    return list(by_root.values())


def _artifacts(spec: PipelineSpec, *, alternates: bool) -> list[Artifact]:
    lock = Lockfile.load(spec.lockfile_path)
    if lock is None:
        return []
    entries = list(lock.instances.values())
    if alternates:
        entries += list(lock.alternates.values())
    return [artifact for entry in entries for artifact in entry.artifacts]


def open_remote(project: Project) -> Remote:
    """The project's remote, or a UsageError saying how to configure one."""
    remote = remote_for(project.root)
    if remote is None:
        raise UsageError(f"{project.root}: no remote is configured",
                         hint='add [remote] url = "s3://bucket/prefix" to civflow.toml at '
                              "the project's root, or set CIVFLOW_REMOTE")
    return remote


def push_pipelines(project: Project, remote: Remote, *,
                   progress: Progress | None = None) -> Transfer:
    """Upload every object the project's lockfiles name that the remote lacks.

    Objects of current entries missing from the local store are reported `missing`;
    objects of alternates (earlier paid-for versions) go along when this machine still
    has them and are skipped quietly when it does not.
    """
    store = project.store
    required: set[str] = set()
    optional: set[str] = set()
    for spec in project.specs:
        required.update(a.sha256 for a in _artifacts(spec, alternates=False))
        optional.update(a.sha256 for a in _artifacts(spec, alternates=True))
    optional -= required
    wanted = required | {sha for sha in optional if store.has(sha)}
    return remote.push_from(store, wanted, progress=progress)


@dataclass
class Restored:
    """out/ files put back from the store for one pipeline, and those that could not be."""

    pipeline: str
    restored: list[Path] = field(default_factory=list)
    unchanged: int = 0
    missing: list[str] = field(default_factory=list)  # instance: why
    named: set[Path] = field(default_factory=set)  # every out/ file the lockfile names, resolved


def pull_pipelines(project: Project, remote: Remote, *, out_dir: Path | None = None,
                   progress: Progress | None = None) -> tuple[Transfer, list[Restored]]:
    """Download what the project's lockfiles name and the store lacks, then restore out/.

    Only bytes that hash to their names enter the store (see `Remote.pull_into`). Every
    out/ file a current lock entry names is then made whole from the store, as
    `civflow checkout` does, except that nothing in out/ is removed.
    """
    store = project.store
    wanted = {a.sha256 for spec in project.specs for a in _artifacts(spec, alternates=False)}
    transfer = remote.pull_into(store, wanted, progress=progress)
    cache = StatCache.for_store(store)
    restored = [restore_out(spec, store, cache, out_dir) for spec in project.specs]
    cache.save()
    return transfer, restored


def restore_out(spec: PipelineSpec, store: ObjectStore, cache: StatCache,
                out_dir: Path | None = None) -> Restored:
    """Copy every artifact of the pipeline's current lock entries from the store into
    `out/<pipeline>/` where it is missing or modified (an edited file is kept in the store
    first); paths outside that folder are refused, never written. The one restore of
    out/: `pull_pipelines` and `checkout` both call it (after fetching what they can)."""
    out = (out_dir or project_root_for(spec.path) / "out") / spec.name
    done = Restored(spec.name)
    lock = Lockfile.load(spec.lockfile_path)
    lock_dir = spec.lockfile_path.parent
    for name, entry in sorted((lock.instances if lock else {}).items()):
        for status in check_artifacts(entry.artifacts, lock_dir, store, cache):
            done.named.add(status.out_path.resolve())
            if status.ok:
                done.unchanged += 1
            elif status.restorable:
                try:
                    restore_artifact(status, store, cache, out_dir=out)
                except UnsafePath:
                    done.missing.append(f"{name}: {status.artifact.path} lies outside "
                                        f"{out} (written with another --out?)")
                    continue
                except FileAccessError as exc:
                    done.missing.append(f"{name}: {exc.message}")
                    continue
                done.restored.append(status.out_path)
            else:
                done.missing.append(f"{name}: {status.artifact.path} is neither in the "
                                    "local store nor on the remote (civflow run downloads "
                                    "it again by blob id, without paying)")
    return done


def shas_of(artifacts: Sequence[Artifact]) -> set[str]:
    """The object names of some artifacts (for `Remote.has_many` / `pull_into`)."""
    return {artifact.sha256 for artifact in artifacts}
