"""Joining lockfiles without losing paid work: repair of what git left, and a merge.

The lockfile's layout makes plain `git merge` clean when branches changed different
instances (civflow.store.lockfile). When both re-ran the same instance, git leaves
conflict markers around that instance's line. `salvage` reads such a file, or a damaged
one (truncated, a line broken): both sides of every conflict and every well-formed
entry line, and what the file visibly holds, so `repair` can keep both results (the
newer current, the other as an earlier result) and refuse rather than write fewer
entries than were there. `merge` is the three-way merge of two parsed lockfiles, for
tools and for the optional git merge driver. Nothing here submits or pays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from civflow.errors import PipelineInvalid
from civflow.keys import nested_deeper_than
from civflow.store.lockfile import (
    CONFLICT_MARKER,
    MAX_DEPTH,
    MAX_EARLIER,
    LockedInstance,
    Lockfile,
    newest_first,
)

__all__ = ["MAX_ALTERNATES", "Salvage", "cap_alternates", "merge", "repair", "salvage"]

MAX_ALTERNATES = MAX_EARLIER  # earlier results kept per instance

# One entry on a line of its own: `"NAME": {...}` with an optional comma.
_ENTRY_LINE = re.compile(r'^\s*("(?:[^"\\]|\\.)*")\s*:\s*(\{.*\})\s*,?\s*$')
_ENTRY_START = re.compile(r'^\s*"(?:[^"\\]|\\.)*"\s*:\s*\{')
_SECTION = re.compile(r'^\s*"(instances|alternates)"\s*:\s*\{\s*$')
_TEXT_FIELD = {"pipeline": re.compile(r'^\s*"pipeline"\s*:\s*("(?:[^"\\]|\\.)*")'),
               "vars": re.compile(r'^\s*"vars"\s*:\s*(\{.*\})\s*,?\s*$')}


def _newer(a: LockedInstance, b: LockedInstance) -> bool:
    return newest_first(a) > newest_first(b)


@dataclass
class Salvage:
    """What a lockfile's text holds, read as leniently as it can be: per side of its
    conflicts (one side when it has none), the current entries; every earlier result;
    and the entry lines that could not be read."""

    pipeline: str | None = None
    vars: Mapping[str, Any] = field(default_factory=dict)
    sides: list[dict[str, LockedInstance]] = field(default_factory=list)
    earlier: dict[str, LockedInstance] = field(default_factory=dict)
    conflicts: int = 0  # conflict regions git left
    broken: list[int] = field(default_factory=list)  # 1-based lines that look like entries
    cut: list[int] = field(default_factory=list)  # entry lines cut short (a truncated file)
    visible: int = 0  # entry lines in the text (each side of a conflict counted)
    # Every result read, by fingerprint (what a plan finds a paid result by): a repair
    # must keep each of them findable.
    fingerprints: set[str] = field(default_factory=set)

    def lockfile(self, pipeline: str) -> Lockfile:
        """Every side joined: per instance the newest result is current, every other
        one (the other side of a conflict) an earlier result."""
        current: dict[str, LockedInstance] = {}
        earlier = dict(self.earlier)
        for side in self.sides:
            for name, entry in side.items():
                present = current.get(name)
                if present is None or _newer(entry, present):
                    if present is not None and present.fingerprint != entry.fingerprint:
                        earlier[present.fingerprint] = present
                    current[name] = entry
                elif entry.fingerprint != present.fingerprint:
                    earlier[entry.fingerprint] = entry
        for entry in current.values():
            earlier.pop(entry.fingerprint, None)
        return Lockfile(self.pipeline or pipeline, current, dict(self.vars), earlier)


def _sides(text: str) -> tuple[list[list[tuple[int, str]]], int]:
    """The text's lines per side of its conflicts (ours, theirs; the diff3 base is left
    out), each with its 1-based line number; one side when there is no conflict."""
    ours: list[tuple[int, str]] = []
    theirs: list[tuple[int, str]] = []
    where = "both"
    regions = 0
    for number, line in enumerate(text.splitlines(), 1):
        marker = CONFLICT_MARKER.match(line)
        if marker is not None:
            kind = marker.group(1)[0]
            if kind == "<":
                where, regions = "ours", regions + 1
            elif kind == "|":
                where = "base"
            elif kind == "=":
                where = "theirs"
            else:
                where = "both"
            continue
        if where in ("both", "ours"):
            ours.append((number, line))
        if where in ("both", "theirs"):
            theirs.append((number, line))
    return ([ours, theirs] if regions else [ours]), regions


def salvage(text: str) -> Salvage:
    """Read every well-formed entry of a lockfile's text, conflict markers and damage
    included (see `Salvage`). Never raises for a broken line: it is listed instead."""
    found = Salvage()
    sides, found.conflicts = _sides(text)
    seen_lines: set[int] = set()
    for lines in sides:
        whole = "\n".join(line for _, line in lines)
        try:
            parsed: Lockfile | None = Lockfile.from_json(whole, "lockfile")
        except PipelineInvalid:  # damage of any kind: read it line by line
            parsed = None
        if parsed is not None:
            found.pipeline = found.pipeline or parsed.pipeline
            found.vars = found.vars or parsed.vars
            found.sides.append(dict(parsed.instances))
            found.earlier.update(parsed.alternates)
            found.fingerprints |= {e.fingerprint for e in (*parsed.instances.values(),
                                                           *parsed.alternates.values())}
            for number, line in lines:
                if _ENTRY_LINE.match(line) and number not in seen_lines:
                    seen_lines.add(number)
                    found.visible += 1
            continue
        found.sides.append(_by_line(lines, found, seen_lines))
    return found


def _by_line(lines: list[tuple[int, str]], found: Salvage,
             seen_lines: set[int]) -> dict[str, LockedInstance]:
    current: dict[str, LockedInstance] = {}
    section = "instances"
    for number, line in lines:
        heading = _SECTION.match(line)
        if heading is not None:
            section = heading.group(1)
            continue
        for name, pattern in _TEXT_FIELD.items():
            value = pattern.match(line)
            if value is not None:
                try:
                    parsed = json.loads(value.group(1))
                except ValueError:
                    continue
                if name == "pipeline" and isinstance(parsed, str):
                    found.pipeline = found.pipeline or parsed
                elif name == "vars" and isinstance(parsed, Mapping):
                    found.vars = found.vars or parsed
        match = _ENTRY_LINE.match(line)
        if match is None:
            if _ENTRY_START.match(line) and number not in seen_lines:
                seen_lines.add(number)
                found.cut.append(number)  # not an entry any more: nothing to keep of it
            continue
        counted = number not in seen_lines
        seen_lines.add(number)
        try:
            key = json.loads(match.group(1))
            data = json.loads(match.group(2))
            if nested_deeper_than(data, MAX_DEPTH):
                raise ValueError("nested too deeply")  # damage: code that walks it recurses
            entries = _entries(key, data, section)
        except (ValueError, TypeError, RecursionError):
            if counted:
                found.visible += 1
                found.broken.append(number)
            continue
        if counted:
            found.visible += 1
        for entry, is_current in entries:
            found.fingerprints.add(entry.fingerprint)
            if is_current:
                current[entry.instance] = entry
            else:
                found.earlier[entry.fingerprint] = entry
    return current


def _entries(key: str, data: Any, section: str) -> list[tuple[LockedInstance, bool]]:
    """The entries one line holds: (entry, is it current). Raises ValueError when the
    line is not a well-formed entry."""
    if not isinstance(data, Mapping):
        raise ValueError(key)
    if section == "alternates":  # schema 1: keyed by fingerprint, the entry names itself
        return [(LockedInstance.from_dict(data), False)]
    out: list[tuple[LockedInstance, bool]] = []
    older = data.get("earlier") or []
    if not isinstance(older, list):
        raise ValueError(key)
    for old in older:
        if not isinstance(old, Mapping):
            raise ValueError(key)
        out.append((LockedInstance.from_dict({"instance": key, **old}), False))
    current = {k: v for k, v in data.items() if k != "earlier"}
    if current:
        out.append((LockedInstance.from_dict({"instance": key, **current}), True))
    return out


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
    newest is current, the rest are alternates; `lock`'s entries count too. Nothing is
    dropped here (the file keeps the newest MAX_EARLIER per instance when written)."""
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
    for entry in current.values():
        alternates.pop(entry.fingerprint, None)
    return Lockfile(pipeline, current, lock.vars if lock else {}, alternates)
