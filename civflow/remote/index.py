"""The remote as planning and restoring see it: which missing objects it holds, and pulls.

`civflow plan` and `civflow run` call `index_for(store)` with the store of the project
they plan; the answer lives as long as that store object (one plan, one run), so a
plan lists the remote at most once per `sha256/ab/` prefix, and never for a project
whose artifacts are all on this machine.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from pathlib import Path

from civflow.errors import RemoteError
from civflow.remote.config import load_config
from civflow.remote.storage import Progress, Remote, Transfer
from civflow.store.objects import ObjectStore

__all__ = ["RemoteIndex", "index_for", "project_of"]

# Up to this many prefixes are listed one by one; past it, the whole tree once.
_FEW_PREFIXES = 16


def project_of(store: ObjectStore) -> Path | None:
    """The project root of a store laid out as `<root>/.civflow/objects`, else None."""
    root = store.root
    if root.name == "objects" and root.parent.name == ".civflow":
        return root.parent.parent
    return None


class RemoteIndex:
    """One project's remote, listed lazily and remembered; safe to share between threads.

    Listing errors are kept in `error` (a sentence, never a credential) and the remote
    is then treated as holding nothing: the caller falls back to what it did without one.
    """

    def __init__(self, remote: Remote | RemoteError) -> None:
        """`remote` opened, or the error that kept it from opening (then it holds
        nothing and `pull` raises that error)."""
        self._broken = remote if isinstance(remote, RemoteError) else None
        self.remote = None if isinstance(remote, RemoteError) else remote
        self.error: str | None = self._broken.message if self._broken else None
        self._sizes: dict[str, int] = {}
        self._listed: set[str] = set()
        self._complete = False
        self._lock = threading.Lock()

    def holding(self, shas: Iterable[str]) -> set[str]:
        """The subset of `shas` the remote holds (by listing, nothing is read)."""
        wanted = set(shas)
        with self._lock:
            if self.remote is not None and self.error is None and not self._complete:
                prefixes = {sha[:2] for sha in wanted} - self._listed
                try:
                    if len(self._listed | prefixes) > _FEW_PREFIXES:
                        self._sizes = self.remote.list_objects()
                        self._complete = True
                    else:
                        for prefix in sorted(prefixes):
                            self._sizes.update(self.remote.list_objects(prefix))
                            self._listed.add(prefix)
                except RemoteError as exc:
                    self.error = exc.message
            return {sha for sha in wanted if sha in self._sizes}

    def pull(self, store: ObjectStore, shas: Iterable[str], *,
             progress: Progress | None = None) -> Transfer:
        """`Remote.pull_into` (verified, atomic), one pull at a time; RemoteError raises."""
        if self.remote is None:
            assert self._broken is not None
            raise self._broken
        with self._lock:
            return self.remote.pull_into(store, shas, progress=progress)


_INDEXES: weakref.WeakKeyDictionary[ObjectStore, RemoteIndex | None] = \
    weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def index_for(store: ObjectStore) -> RemoteIndex | None:
    """The remote of the project whose store this is, for as long as `store` lives;
    None when the project configures none (or the store is not a project's).

    A bad config file raises its located PipelineInvalid; a remote that cannot be
    opened (no storage library for its URL) is an index whose `error` says so.
    """
    with _GUARD:
        if store in _INDEXES:
            return _INDEXES[store]
        root = project_of(store)
        config = load_config(root) if root is not None else None
        index: RemoteIndex | None = None
        if config is not None:
            try:
                index = RemoteIndex(Remote(config))
            except RemoteError as exc:
                index = RemoteIndex(exc)
        _INDEXES[store] = index
        return index
