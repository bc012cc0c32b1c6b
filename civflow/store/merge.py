"""Merging lockfiles without losing paid work: a git merge driver, and repair from journals.

Two pull requests that change one pipeline both add entries to its lockfile; a text
merge conflicts, and deleting the file would pay again for what both branches bought.
`merge` unions the entries per instance: a side that changed an instance wins over
one that did not; when both changed it, the newer result is current and the other
is kept among the alternates (by fingerprint), so whichever inputs the merged
pipeline asks for are cached. `repair` rebuilds a lockfile from every finished run's
journal, submitting nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from civflow.store.lockfile import LockedInstance, Lockfile

__all__ = ["MAX_ALTERNATES", "cap_alternates", "merge", "repair"]

MAX_ALTERNATES = 3  # earlier results kept per instance


def _newer(a: LockedInstance, b: LockedInstance) -> bool:
    return (a.completed_at or "", a.fingerprint) > (b.completed_at or "", b.fingerprint)


def cap_alternates(alternates: dict[str, LockedInstance], current: Mapping[str, LockedInstance]
         ) -> dict[str, LockedInstance]:
    """Drop alternates equal to a current entry, keep the newest few per instance."""
    live = {e.fingerprint for e in current.values()}
    kept: dict[str, LockedInstance] = {}
    by_instance: dict[str, list[LockedInstance]] = {}
    for fp, entry in alternates.items():
        if fp not in live:
            by_instance.setdefault(entry.instance, []).append(entry)
    for entries in by_instance.values():
        entries.sort(key=lambda e: (e.completed_at or "", e.fingerprint), reverse=True)
        kept.update((e.fingerprint, e) for e in entries[:MAX_ALTERNATES])
    return kept


def merge(base: Lockfile | None, ours: Lockfile, theirs: Lockfile) -> Lockfile:
    """The three-way merge of one pipeline's lockfile; never drops a paid result."""
    before = dict(base.instances) if base else {}
    current: dict[str, LockedInstance] = {}
    alternates: dict[str, LockedInstance] = {**(base.alternates if base else {}),
                                             **theirs.alternates, **ours.alternates}
    for name in sorted(set(ours.instances) | set(theirs.instances) | set(before)):
        mine, other, old = ours.instances.get(name), theirs.instances.get(name), before.get(name)
        chosen: LockedInstance | None
        if mine != old and other != old and mine != other:  # both sides changed it
            if mine is None or other is None:
                chosen = mine or other  # one removed it, the other changed it: keep that
            else:
                chosen = mine if _newer(mine, other) else other
        else:
            chosen = other if other != old else mine  # the side that changed it wins
        for entry in (mine, other, old):
            if entry is not None and (chosen is None or entry.fingerprint != chosen.fingerprint):
                alternates[entry.fingerprint] = entry  # removed or replaced: still paid for
        if chosen is not None:
            current[name] = chosen
    made_with = ours.vars if ours.vars == theirs.vars else {}
    return Lockfile(ours.pipeline, current, made_with, cap_alternates(alternates, current))


def repair(pipeline: str, lock: Lockfile | None,
           finished: Iterable[LockedInstance]) -> Lockfile:
    """A lockfile rebuilt from the entries runs finished (oldest first): per instance the
    newest is current, the rest are alternates; `lock`'s entries count too."""
    current: dict[str, LockedInstance] = dict(lock.instances) if lock else {}
    alternates: dict[str, LockedInstance] = dict(lock.alternates) if lock else {}
    for entry in finished:
        present = current.get(entry.instance)
        if present is None or _newer(entry, present):
            if present is not None and present.fingerprint != entry.fingerprint:
                alternates[present.fingerprint] = present
            current[entry.instance] = entry
        elif entry.fingerprint != present.fingerprint:
            alternates[entry.fingerprint] = entry
    return Lockfile(pipeline, current, lock.vars if lock else {},
                    cap_alternates(alternates, current))
