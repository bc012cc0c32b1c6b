"""Whether each recorded artifact is intact in `out/` and in the store, and local repair.

Hashing every output on every plan would be slow for videos, so a small stat cache
(`.civflow/statcache.json`) remembers the sha256 of a file together with its size,
mtime, ctime and inode: an entry is trusted only while all four still match, and the
file is re-hashed as soon as any of them moved. A file edited within the same clock
tick as civflow's own write, keeping its size, is the one change it cannot see; an
explicit `ObjectStore.check` always re-hashes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path, PurePosixPath

from civflow.errors import FileAccessError, UnsafePath
from civflow.names import contained, safe_dirname, safe_extension
from civflow.store.atomic import atomic_write_text
from civflow.store.lockfile import Artifact, LockedInstance
from civflow.store.objects import ObjectStore, hash_file

__all__ = [
    "ArtifactState",
    "ArtifactStatus",
    "StatCache",
    "check_artifact",
    "check_artifacts",
    "relocated",
    "restore_artifact",
]

_SCHEMA = 1
# Bounded: stale paths (renamed outputs, old runs) are dropped oldest first past this.
MAX_ENTRIES = 100_000


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class StatCache:
    """path -> (size, mtime_ns, ctime_ns, inode, sha256), persisted atomically as JSON.

    Use `sha256_of(path)` to learn a file's hash (cached while its stat is unchanged),
    `record(path, sha256)` right after writing a file whose hash you know, and `save()`
    once at the end (it writes only when something changed). A missing, unreadable
    or malformed cache file is an empty cache: it only ever costs a re-hash.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: dict[str, tuple[int, int, int, int, str]] = {}
        self._dirty = False

    @classmethod
    def for_store(cls, store: ObjectStore) -> StatCache:
        """The cache beside the store: `<project>/.civflow/statcache.json`, loaded."""
        return cls.load(store.root.parent / "statcache.json")

    @classmethod
    def load(cls, path: Path) -> StatCache:
        cache = cls(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cache
        if not isinstance(data, dict) or data.get("schema") != _SCHEMA:
            return cache
        entries = data.get("entries")
        if not isinstance(entries, dict):
            return cache
        for name, value in entries.items():
            if isinstance(value, list) and len(value) == 5 and \
                    all(isinstance(v, int) and not isinstance(v, bool) for v in value[:4]) \
                    and isinstance(value[4], str):
                cache._entries[name] = (value[0], value[1], value[2], value[3], value[4])
        return cache

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _name(path: Path) -> str:
        return os.path.abspath(path)

    def sha256_of(self, path: Path) -> str | None:
        """The file's sha256 (from the cache when its stat still matches), None if absent."""
        name = self._name(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._forget(name)
            return None
        except OSError as exc:
            raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
        entry = self._entries.get(name)
        if entry is not None and entry[:4] == _key(st):
            return entry[4]
        if not os.path.isfile(path):
            return None
        sha256 = hash_file(path)
        # Stat again: a file that changed while it was hashed must not be cached as stable.
        if _key(os.stat(path)) == _key(st):
            self._put(name, (*_key(st), sha256))
        return sha256

    def record(self, path: Path, sha256: str) -> None:
        """Remember that `path`, as it is now on disk, hashes to `sha256` (civflow wrote it)."""
        try:
            st = os.stat(path)
        except OSError:
            return
        self._put(self._name(path), (*_key(st), sha256))

    def _put(self, name: str, entry: tuple[int, int, int, int, str]) -> None:
        self._entries.pop(name, None)
        self._entries[name] = entry
        while len(self._entries) > MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._dirty = True

    def _forget(self, name: str) -> None:
        if self._entries.pop(name, None) is not None:
            self._dirty = True

    def save(self) -> None:
        """Write the cache atomically if anything changed (and it has a path)."""
        if self.path is None or not self._dirty:
            return
        data = {"schema": _SCHEMA,
                "entries": {name: list(entry) for name, entry in self._entries.items()}}
        atomic_write_text(self.path, json.dumps(data, separators=(",", ":")) + "\n")
        self._dirty = False


class ArtifactState(Enum):
    """What has to happen for an artifact to be whole again."""

    OK = "ok"
    # The store has the right bytes: the out/ file is copied back, nothing is downloaded.
    OUT_MISSING_OR_MODIFIED = "out-missing-or-modified"
    # The store lost the object but the out/ file still has the recorded hash: it is
    # adopted back into the store (a fresh clone with out/ committed looks like this).
    STORE_MISSING_OUT_OK = "store-missing-out-ok"
    # Neither copy has the recorded bytes: re-download by blob id (`BlobBook.redownload`),
    # or run the instance again if Civitai forgot the blob.
    STORE_MISSING_OR_CORRUPT = "store-missing-or-corrupt"


@dataclass(frozen=True)
class ArtifactStatus:
    """One artifact's state, where its out/ file is, and a sentence saying why."""

    artifact: Artifact
    state: ArtifactState
    out_path: Path
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state is ArtifactState.OK

    @property
    def restorable(self) -> bool:
        """Repairable from local bytes alone (`restore_artifact`), nothing downloaded."""
        return self.state in (ArtifactState.OUT_MISSING_OR_MODIFIED,
                              ArtifactState.STORE_MISSING_OUT_OK)

    @property
    def needs_download(self) -> bool:
        return self.state is ArtifactState.STORE_MISSING_OR_CORRUPT


def check_artifact(artifact: Artifact, lock_dir: Path, store: ObjectStore,
                   cache: StatCache) -> ArtifactStatus:
    """Classify one artifact without changing anything on disk.

    The store object and the out/ file (`lock_dir / artifact.path`) are hashed through
    `cache`, so unchanged files cost one stat each. A store object whose bytes do not
    match is reported as STORE_MISSING_OR_CORRUPT (or STORE_MISSING_OUT_OK); moving it
    aside is left to `restore_artifact` / `ObjectStore.quarantine`.
    """
    out_path = lock_dir / artifact.path
    store_sha = cache.sha256_of(store.path_for(artifact.sha256))
    out_sha = cache.sha256_of(out_path)
    store_ok = store_sha == artifact.sha256
    out_ok = out_sha == artifact.sha256
    if store_ok and out_ok:
        return ArtifactStatus(artifact, ArtifactState.OK, out_path)
    out_words = "missing" if out_sha is None else "modified" if not out_ok else "intact"
    if store_ok:
        return ArtifactStatus(artifact, ArtifactState.OUT_MISSING_OR_MODIFIED, out_path,
                              f"{artifact.path} is {out_words}; the store has its bytes")
    store_words = "missing" if store_sha is None else "corrupt"
    if out_ok:
        return ArtifactStatus(artifact, ArtifactState.STORE_MISSING_OUT_OK, out_path,
                              f"the stored copy of {artifact.path} is {store_words}; "
                              "the out/ file is intact")
    return ArtifactStatus(artifact, ArtifactState.STORE_MISSING_OR_CORRUPT, out_path,
                          f"{artifact.path} is {out_words} and its stored copy is "
                          f"{store_words}; blob {artifact.blob_id} must be downloaded again")


def check_artifacts(artifacts: Iterable[Artifact], lock_dir: Path, store: ObjectStore,
                    cache: StatCache) -> tuple[ArtifactStatus, ...]:
    """`check_artifact` for each, in order."""
    return tuple(check_artifact(a, lock_dir, store, cache) for a in artifacts)


def restore_artifact(status: ArtifactStatus, store: ObjectStore, cache: StatCache, *,
                     out_dir: Path) -> ArtifactStatus:
    """Repair a `restorable` artifact from local bytes; the new status (OK on success).

    OUT_MISSING_OR_MODIFIED: a modified out/ file is first kept in the store (so a
    hand edit is never lost: `ObjectStore.path_for(hash_file(old))`), then replaced by
    a fresh copy of the object. STORE_MISSING_OUT_OK: a corrupt object is quarantined
    and the out/ copy is adopted into the store. The out/ path must resolve inside
    `out_dir` (UnsafePath otherwise): a lockfile path is never trusted to write with.
    Other states are returned unchanged.
    """
    artifact = status.artifact
    if status.state is ArtifactState.OUT_MISSING_OR_MODIFIED:
        contained(out_dir, status.out_path)
        detail = ""
        if status.out_path.is_file():
            kept = store.import_file(status.out_path)
            detail = f"the edited file was kept in the store as {kept}"
        store.materialize(artifact.sha256, status.out_path)
        cache.record(status.out_path, artifact.sha256)
        return ArtifactStatus(artifact, ArtifactState.OK, status.out_path, detail)
    if status.state is ArtifactState.STORE_MISSING_OUT_OK:
        if store.path_for(artifact.sha256).exists():
            store.quarantine(artifact.sha256)
        adopted = store.import_file(status.out_path)
        if adopted != artifact.sha256:  # the out/ file changed since it was checked
            with contextlib.suppress(FileAccessError):
                cache.sha256_of(status.out_path)
            return ArtifactStatus(artifact, ArtifactState.STORE_MISSING_OR_CORRUPT,
                                  status.out_path, f"{artifact.path} changed while it was "
                                  "being adopted; download the blob again")
        cache.record(store.path_for(artifact.sha256), artifact.sha256)
        return ArtifactStatus(artifact, ArtifactState.OK, status.out_path)
    return status


def relocated(entry: LockedInstance, lock_dir: Path, out_base: Path) -> LockedInstance:
    """`entry` with every artifact recorded outside `out_base` (the current run's
    `out/<pipeline>`) moved to where a download into it puts that file:
    `<out_base>/<safe_dirname(instance)>/<n>.<ext>`.

    An earlier run's `--out`, a moved project or a hand-edited path (`../../x.png`) then
    never decides where civflow writes, nor makes a paid result look lost: its bytes
    are restored into the current out/ from wherever they are. Entries whose files are
    all inside `out_base` come back as they are.
    """
    moved: list[Artifact] = []
    changed = False
    for n, artifact in enumerate(entry.artifacts):
        try:
            contained(out_base, lock_dir / artifact.path)
        except UnsafePath:
            ext = safe_extension(PurePosixPath(artifact.path).suffix.lstrip(".")) or "bin"
            target = out_base / safe_dirname(entry.instance) / f"{n}.{ext}"
            path = Path(os.path.relpath(target, lock_dir)).as_posix()
            moved.append(replace(artifact, path=path))
            changed = True
        else:
            moved.append(artifact)
    return replace(entry, artifacts=tuple(moved)) if changed else entry
