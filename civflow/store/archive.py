"""Earlier results kept on this machine, by fingerprint: going back costs nothing.

When a change replaces an instance's lock entry, the old entry (its outputs' bytes
are in the object store already) is kept here, outside the committed lockfile, so
the lockfile's diff shows only what changed, and undoing the change is cached.
Files are `<root>/<fingerprint hex>.json`, written atomically.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from civflow.store.atomic import atomic_write_text
from civflow.store.lockfile import LockedInstance

__all__ = ["EntryArchive"]

_FINGERPRINT = re.compile(r"^sha256:([0-9a-f]{64})$")


class EntryArchive:
    """Lock entries by fingerprint under `root` (usually `.civflow/entries`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # The folder's file names, listed on the first `get`: a plan asks for every
        # instance that has no current entry, and most are in no archive at all.
        self._names: set[str] | None = None

    def _listed(self) -> set[str]:
        if self._names is None:
            try:
                with os.scandir(self.root) as found:
                    self._names = {e.name for e in found}
            except OSError:
                self._names = set()
        return self._names

    @staticmethod
    def _name(fingerprint: str) -> str | None:
        match = _FINGERPRINT.match(fingerprint)
        return f"{match.group(1)}.json" if match else None

    def put(self, entry: LockedInstance) -> None:
        name = self._name(entry.fingerprint)
        if name is not None:
            atomic_write_text(self.root / name,
                              json.dumps(entry.to_dict(), sort_keys=True) + "\n")
            self._listed().add(name)

    def get(self, fingerprint: str) -> LockedInstance | None:
        """The archived entry, or None (absent, unreadable or damaged: never trusted)."""
        name = self._name(fingerprint)
        if name is None or name not in self._listed():
            return None  # (the usual answer: asked before any path is built)
        try:
            text = (self.root / name).read_text(encoding="utf-8")
            entry = LockedInstance.from_dict(json.loads(text))
        except (OSError, ValueError, RecursionError):
            return None
        return entry if entry.fingerprint == fingerprint else None
