"""What the lockfile and the object store say about earlier results, as planning inputs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from civflow.loading.model import PipelineSpec, project_root_for
from civflow.origin import Origin
from civflow.planning import Prior
from civflow.remote.index import index_for
from civflow.request import tokenize_output
from civflow.store.archive import EntryArchive
from civflow.store.integrity import ArtifactStatus, StatCache, check_artifacts, relocated
from civflow.store.lockfile import Artifact, LockedInstance, Lockfile
from civflow.store.objects import ObjectStore


def project_root(spec: PipelineSpec) -> Path:
    return project_root_for(spec.path)


def runs_root(root: Path, origin: Origin = Origin.CIVITAI) -> Path:
    """Where the journals of runs against `origin` are kept (previews apart)."""
    if origin is Origin.EMULATOR:
        return root / ".civflow" / "previews" / "runs"
    return root / ".civflow" / "runs"


def entry_archive(root: Path) -> EntryArchive:
    """Earlier lock entries kept on this machine (see civflow.store.archive)."""
    return EntryArchive(root / ".civflow" / "entries")


def object_store(spec: PipelineSpec) -> ObjectStore:
    return ObjectStore(project_root(spec) / ".civflow" / "objects")


def default_out(spec: PipelineSpec, out_dir: Path | None = None) -> Path:
    """Where a run (with `--out out_dir`, or the project's `out/`) writes the pipeline's
    files: `<out>/<pipeline name>`."""
    return (out_dir or project_root(spec) / "out") / spec.name


@dataclass(frozen=True)
class ArtifactHealth:
    """What a lock entry's artifacts need: nothing, local restores, or downloads.

    `restore` can be repaired from bytes on this machine (`restore_artifact`, or
    `BlobBook.repair`), `redownload` only by fetching the blob id again
    (`BlobBook.redownload`, no workflow is submitted); if Civitai forgot the blob the
    instance has to run again.
    """

    statuses: tuple[ArtifactStatus, ...]

    @property
    def ok(self) -> bool:
        return all(status.ok for status in self.statuses)

    @property
    def restore(self) -> tuple[Artifact, ...]:
        return tuple(s.artifact for s in self.statuses if s.restorable)

    @property
    def redownload(self) -> tuple[Artifact, ...]:
        return tuple(s.artifact for s in self.statuses if s.needs_download)


def stat_cache(store: ObjectStore) -> StatCache:
    """The project's stat cache, shared within this process; call `.save()` when done.

    Loaded once per process and again only when the file on disk changed, so that
    checking thousands of lock entries one `prior_of` at a time parses it once.
    """
    path = store.root.parent / "statcache.json"
    try:
        st = path.stat()
        stamp: tuple[int, int, int] | None = (st.st_size, st.st_mtime_ns, st.st_ino)
    except OSError:
        stamp = None
    known = _CACHES.get(path)
    if known is not None and known[0] == stamp:
        return known[1]
    cache = StatCache.load(path)
    _CACHES[path] = (stamp, cache)
    while len(_CACHES) > _MAX_CACHES:
        del _CACHES[next(iter(_CACHES))]
    return cache


_CACHES: dict[Path, tuple[tuple[int, int, int] | None, StatCache]] = {}
_MAX_CACHES = 8


def artifact_health(entry: LockedInstance, lock_dir: Path, store: ObjectStore,
                    cache: StatCache | None = None) -> ArtifactHealth:
    """Check every artifact of a lock entry against the store and out/, changing nothing.

    Unchanged files cost a stat each (see `StatCache`); moved ones are re-hashed. Pass
    the same `cache` for all entries of a plan and `cache.save()` after; without one the
    process-wide `stat_cache(store)` is used and not saved.
    """
    stats = cache if cache is not None else stat_cache(store)
    return ArtifactHealth(check_artifacts(entry.artifacts, lock_dir, store, stats))


def prior_of(entry: LockedInstance, lock_dir: Path, store: ObjectStore | None,
             cache: StatCache | None = None, out_base: Path | None = None) -> Prior:
    """Planning view of one lock entry; `artifacts_ok` only if every artifact is intact.

    Intact means the store object and the out/ file both hash to the recorded sha256
    (checked through the stat cache, see `artifact_health` for which ones need
    restoring and which a download). Those no local copy can give are looked up on the
    project's remote, if it has one (`remote`: pulled by the run, not re-submitted).
    With `store=None` artifacts are taken as they are. With `out_base` (the run's
    `out/<pipeline>`), files recorded outside it are checked where the run restores them
    (`relocated`). `lost` names the blobs no local copy nor the remote can give.
    """
    sha_by_blob = {a.blob_id: a.sha256 for a in entry.artifacts}
    damaged = 0
    remote: tuple[str, ...] = ()
    remote_error: str | None = None
    lost: tuple[str, ...] = ()
    if out_base is not None:
        entry = relocated(entry, lock_dir, out_base)
    if store is not None and entry.artifacts:
        health = artifact_health(entry, lock_dir, store, cache)
        damaged = sum(not s.ok for s in health.statuses)
        gone_here = {a.sha256 for a in health.redownload}
        index = index_for(store) if gone_here else None  # the remote is asked only then
        if index is not None:
            remote = tuple(sorted(index.holding(gone_here)))
            remote_error = index.error
        lost = tuple(sorted({a.blob_id for a in health.redownload
                             if a.sha256 not in remote}))
    return Prior(
        fingerprint=entry.fingerprint,
        request=entry.request,
        output=tokenize_output(entry.output, sha_by_blob),
        seed=entry.seed,
        artifacts_ok=not damaged,
        cost=entry.cost,
        reroll=entry.reroll,
        damaged=damaged,
        remote=remote,
        remote_error=remote_error,
        lost=lost,
        instance=entry.instance,
    )


def load_priors(spec: PipelineSpec, *, check_artifacts: bool = True) -> dict[str, Prior]:
    lock = Lockfile.load(spec.lockfile_path)
    if lock is None:
        return {}
    store = object_store(spec) if check_artifacts else None
    folder = spec.lockfile_path.parent
    cache = stat_cache(store) if store is not None else None
    out_base = default_out(spec) if check_artifacts else None
    priors = {name: prior_of(entry, folder, store, cache, out_base)
              for name, entry in lock.instances.items()}
    if cache is not None:
        cache.save()
    return priors


class Alternates(Mapping[str, Prior]):
    """Earlier results by fingerprint, for the plan: the lockfile's alternates (a merge's
    other side) and this machine's archive (`.civflow/entries`), read on demand."""

    def __init__(self, committed: Mapping[str, LockedInstance], archive: EntryArchive,
                 lock_dir: Path, store: ObjectStore, cache: StatCache,
                 out_base: Path | None = None, *, origin: Origin = Origin.CIVITAI) -> None:
        # Only what this origin made: an emulator's preview is never a paid alternate.
        self._committed = {fp: e for fp, e in committed.items()
                           if Origin.of_entry(e.made_by) is origin}
        self._origin = origin
        self._archive = archive
        self._args = (lock_dir, store, cache, out_base)
        self._seen: dict[str, Prior | None] = {}

    def entry(self, fingerprint: str) -> LockedInstance | None:
        entry = self._committed.get(fingerprint) or self._archive.get(fingerprint)
        if entry is None or Origin.of_entry(entry.made_by) is not self._origin:
            return None
        return entry

    def __getitem__(self, fingerprint: str) -> Prior:
        if fingerprint not in self._seen:
            entry = self.entry(fingerprint)
            self._seen[fingerprint] = None if entry is None else prior_of(entry, *self._args)
        prior = self._seen[fingerprint]
        if prior is None:
            raise KeyError(fingerprint)
        return prior

    def __iter__(self) -> Iterator[str]:
        return iter(self._committed)

    def __len__(self) -> int:
        return len(self._committed)
