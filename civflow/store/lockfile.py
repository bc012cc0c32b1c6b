"""The committed lockfile: per instance its fingerprint, workflow, cost, output and artifacts.

`pipelines/hero-shot.yaml` is locked by `pipelines/hero-shot.lock.json`. The file is
plain JSON written deterministically for git so that plain `git merge` (GitHub's merge
button included, with no civflow set up in the clone) joins branches that changed
different instances:

- each instance is one line, in name order, with a blank line between instances: two
  branches that changed different instances changed lines git keeps apart, so the merge
  is clean and keeps both. (Without the blank line, changes to neighbouring lines are
  one conflict.)
- an instance's earlier paid results (the other side of a merge that changed the same
  instance, kept by `civflow lock repair`) ride on its own line, under `"earlier"`, so
  keeping them never adds a line that another branch could also add.

A 200-instance sweep is a file of about 400 lines, a one-word prompt change re-runs and
rewrites only the lines of the instances it touches, and a conflict (both branches
re-ran the same instance) is confined to that instance's line, which `civflow lock
repair` resolves keeping both results. It is written atomically so a crash never leaves
half of it behind. Schema 1 files (top-level `alternates`, no separators) are read as
well, and written as schema 2 the next time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from civflow.errors import Diagnostic, FileAccessError, Location, PipelineInvalid
from civflow.keys import nested_deeper_than
from civflow.names import strip_urls
from civflow.producers import BLOB_TOKEN
from civflow.store.atomic import atomic_write_text

__all__ = [
    "CONFLICT_MARKER",
    "MAX_EARLIER",
    "SCHEMA",
    "Artifact",
    "LockedInstance",
    "Lockfile",
    "newest_first",
    "plain",
]

SCHEMA = 2
_READS = (1, 2)  # the schemas this civflow reads
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Deeper JSON than this is damage, not a lockfile: outputs nest a few levels.
MAX_DEPTH = 64
_HINT = ("`civflow lock repair FILE` rebuilds it from every well-formed entry it still "
         "holds (conflict markers included) and keeps a copy of what it replaces; "
         "nothing is submitted or paid")
# Earlier paid results kept per instance in the committed file (the other side of a
# conflicting merge, kept by `civflow lock repair`): the newest ones. Older ones stay
# findable on the machine that had them (.civflow/entries); `civflow lock prune` drops
# them from the file.
MAX_EARLIER = 3
# Lines git leaves around a conflict (`|||||||` with merge.conflictStyle diff3).
CONFLICT_MARKER = re.compile(r"^(<{7}|={7}|>{7}|\|{7})(?: |$)", re.MULTILINE)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Mappings and tuples made into dicts and lists with text keys, so json.dumps takes
    them as they will read back. Written for the common case: a leaf is a str or number,
    and a container a dict or list, each recognised by its exact type before the ABCs."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is dict or (kind is not list and isinstance(value, Mapping)):
        return {k if type(k) is str else str(k): plain(v) for k, v in value.items()}
    if kind is list or isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


class _Shape(ValueError):
    """A lockfile value of the wrong shape; `where` is a dotted path into the JSON."""

    def __init__(self, where: str, expected: str) -> None:
        super().__init__(f"{where}: expected {expected}")
        self.where = where
        self.expected = expected


def _get(data: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise _Shape(f"{where}.{key}", "a value (the key is missing)")
    return data[key]


def _str(data: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    value = data.get(key) if optional else _get(data, key, where)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Shape(f"{where}.{key}", "a string")
    return value


def _int(data: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    value = data.get(key) if optional else _get(data, key, where)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Shape(f"{where}.{key}", "an integer")
    return value


def _mapping(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = _get(data, key, where)
    if not isinstance(value, Mapping):
        raise _Shape(f"{where}.{key}", "an object")
    return value


@dataclass(frozen=True)
class Artifact:
    """One downloaded blob: where Civitai keeps it, what its bytes hash to, where it lies."""

    blob_id: str
    sha256: str
    size: int
    media_type: str | None
    width: int | None
    height: int | None
    path: str  # relative to the lockfile's folder, posix separators

    def to_dict(self) -> dict[str, Any]:
        return {"blobId": self.blob_id, "sha256": self.sha256, "size": self.size,
                "mediaType": self.media_type, "width": self.width, "height": self.height,
                "path": self.path}

    @classmethod
    def from_dict(cls, data: Any, where: str = "artifact") -> Artifact:
        if not isinstance(data, Mapping):
            raise _Shape(where, "an object")
        sha256 = _str(data, "sha256", where)
        if not _SHA256.match(sha256):
            raise _Shape(f"{where}.sha256", "64 lowercase hex digits")
        size = _int(data, "size", where)
        if size < 0:
            raise _Shape(f"{where}.size", "a size of 0 or more")
        return cls(blob_id=_str(data, "blobId", where), sha256=sha256, size=size,
                   media_type=_str(data, "mediaType", where, optional=True),
                   width=_int(data, "width", where, optional=True),
                   height=_int(data, "height", where, optional=True),
                   path=_str(data, "path", where))


_ORIGINS = ("civitai", "emulator")


def _made_by(data: Mapping[str, Any], where: str) -> str | None:
    value = _str(data, "madeBy", where, optional=True)
    if value is not None and value not in _ORIGINS:
        raise _Shape(f"{where}.madeBy", " or ".join(f'"{o}"' for o in _ORIGINS))
    return None if value is None else str(value)


@dataclass(frozen=True)
class LockedInstance:
    """What one successful step instance was asked and produced."""

    instance: str
    step: str
    type: str
    fingerprint: str
    # The rendered input and options that were sent, blob URLs replaced by content tokens.
    request: Mapping[str, Any]
    seed: int | None
    workflow_id: str | None
    cost: float | None
    completed_at: str | None
    output: Mapping[str, Any]  # URL fields removed
    artifacts: tuple[Artifact, ...] = field(default=())
    # How many times `--reroll` salted the seed; written only once it is not 0.
    reroll: int = 0
    # Which API made it: "civitai" or "emulator" (civflow.origin). None for an entry
    # written before civflow recorded it, read as made by Civitai and kept as it is.
    made_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {
            "instance": self.instance, "step": self.step, "type": self.type,
            "fingerprint": self.fingerprint, "request": plain(self.request),
            "seed": self.seed, "workflowId": self.workflow_id, "cost": self.cost,
            "completedAt": self.completed_at, "output": plain(strip_urls(self.output)),
            "artifacts": [a.to_dict() for a in self.artifacts],
        }
        if self.reroll:
            data["reroll"] = self.reroll
        if self.made_by is not None:
            data["madeBy"] = self.made_by
        return data

    @property
    def refs(self) -> tuple[str, ...]:
        """What it made as a downstream request holds it: content tokens and blob ids."""
        return tuple(ref for a in self.artifacts for ref in (BLOB_TOKEN + a.sha256, a.blob_id))

    # An entry does not change once made, and every lockfile checkpoint of a long run
    # writes all of them again: each is turned into JSON once (3,000 entries: 37 -> 4 ms).
    @cached_property
    def json_named(self) -> str:
        """The entry as one line of JSON, its name included (under `alternates`)."""
        return _dumps(self.to_dict())

    @cached_property
    def json_unnamed(self) -> str:
        """The entry as one line of JSON without its name (under `instances`, whose
        keys are the names)."""
        return _dumps({k: v for k, v in self.to_dict().items() if k != "instance"})

    @classmethod
    def from_dict(cls, data: Any, where: str = "entry") -> LockedInstance:
        """Parse one entry; raises PipelineInvalid (via Lockfile) on a wrong shape."""
        if not isinstance(data, Mapping):
            raise _Shape(where, "an object")
        cost = data.get("cost")
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, int | float)):
            raise _Shape(f"{where}.cost", "a number or null")
        artifacts = _get(data, "artifacts", where)
        if not isinstance(artifacts, list):
            raise _Shape(f"{where}.artifacts", "a list")
        return cls(
            instance=_str(data, "instance", where), step=_str(data, "step", where),
            type=_str(data, "type", where), fingerprint=_str(data, "fingerprint", where),
            request=_mapping(data, "request", where),
            seed=_int(data, "seed", where, optional=True),
            workflow_id=_str(data, "workflowId", where, optional=True),
            cost=float(cost) if cost is not None else None,
            completed_at=_str(data, "completedAt", where, optional=True),
            output=_mapping(data, "output", where),
            artifacts=tuple(Artifact.from_dict(a, f"{where}.artifacts[{i}]")
                            for i, a in enumerate(artifacts)),
            reroll=_int(data, "reroll", where, optional=True) or 0,
            made_by=_made_by(data, where),
        )


@dataclass(frozen=True)
class Lockfile:
    """Every locked instance of one pipeline, by instance name."""

    pipeline: str
    instances: Mapping[str, LockedInstance] = field(default_factory=dict)
    # The --var values (beyond the file's defaults) the entries were made with, if any.
    vars: Mapping[str, Any] = field(default_factory=dict)
    # Paid-for entries that are not current (the other side of a merge, the version
    # before a change), by fingerprint: a plan that asks for one again finds it cached.
    alternates: Mapping[str, LockedInstance] = field(default_factory=dict)

    def to_json(self) -> str:
        """The file's text (see the module docstring for why it is laid out so). At most
        MAX_EARLIER earlier results per instance are written, the newest ones."""
        earlier: dict[str, list[LockedInstance]] = {}
        live = {(e.instance, e.fingerprint) for e in self.instances.values()}
        for entry in self.alternates.values():
            if (entry.instance, entry.fingerprint) not in live:
                earlier.setdefault(entry.instance, []).append(entry)
        names = sorted(set(self.instances) | set(earlier))
        lines = ["{", '  "instances": {', ""]
        for i, name in enumerate(names):
            line = _instance_json(self.instances.get(name), earlier.get(name, ()))
            lines.append(f"    {_dumps(name)}: {line}{',' if i < len(names) - 1 else ''}")
            lines.append("")
        lines += ["  },", f'  "pipeline": {_dumps(self.pipeline)},',
                  f'  "schema": {SCHEMA}{"," if self.vars else ""}']
        if self.vars:
            lines.append(f'  "vars": {_dumps(plain(self.vars))}')
        lines.append("}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_json(cls, text: str, path: Path | str) -> Lockfile:
        """Parse a lockfile's text; any damage is a PipelineInvalid naming the file."""
        where = str(path)
        marker = CONFLICT_MARKER.search(text)
        if marker is not None:
            lineno = text.count("\n", 0, marker.start()) + 1
            raise PipelineInvalid([Diagnostic(
                "the lockfile has merge conflicts: both branches re-ran the same instance",
                Location(where, lineno, 1), source_line=_line(text, lineno),
                hint=f"`civflow lock repair {where}` keeps both results (one current, the "
                     "other as an earlier result), so neither is paid for again")])
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PipelineInvalid([Diagnostic(
                f"broken lockfile: {exc.msg}", Location(where, exc.lineno, exc.colno),
                hint=_HINT, source_line=_line(text, exc.lineno))]) from exc
        except RecursionError:
            document = None
            too_deep = True
        else:
            too_deep = nested_deeper_than(document, MAX_DEPTH)
        if too_deep:
            # Code that walks outputs recurses; refuse before it can overflow the stack.
            raise PipelineInvalid([Diagnostic(
                f"broken lockfile: values nest more than {MAX_DEPTH} levels deep",
                Location(where, 1, 1), hint=_HINT, source_line=_line(text, 1))])
        try:
            return cls._from_document(document)
        except _Shape as exc:
            location = _locate(text, where, exc.where)
            raise PipelineInvalid([Diagnostic(
                f"broken lockfile: {exc.where}: expected {exc.expected}", location,
                hint=_HINT, source_line=_line(text, location.line))]) from exc

    @classmethod
    def _from_document(cls, document: Any) -> Lockfile:
        if not isinstance(document, Mapping):
            raise _Shape("(top level)", "an object")
        schema = document.get("schema")
        if schema not in _READS:
            raise _Shape("schema", f"{' or '.join(map(str, _READS))} (this civflow reads "
                                   f"lockfile schemas {', '.join(map(str, _READS))}; found "
                                   f"{json.dumps(schema)}: a newer civflow wrote it)")
        pipeline = _str(document, "pipeline", "lockfile")
        raw = _mapping(document, "instances", "lockfile")
        instances: dict[str, LockedInstance] = {}
        alternates: dict[str, LockedInstance] = {}
        for name, data in raw.items():
            key = f"instances.{name}"
            if not isinstance(data, Mapping):
                raise _Shape(key, "an object")
            earlier = data.get("earlier") or []
            if not isinstance(earlier, list):
                raise _Shape(f"{key}.earlier", "a list")
            for i, old in enumerate(earlier):
                if isinstance(old, Mapping) and "instance" not in old:
                    old = {**old, "instance": name}
                entry = LockedInstance.from_dict(old, f"{key}.earlier[{i}]")
                alternates[entry.fingerprint] = entry
            current = {k: v for k, v in data.items() if k != "earlier"}
            if not current:
                continue  # only earlier results (its instance is gone from the pipeline)
            if "instance" not in current:
                current["instance"] = name
            entry = LockedInstance.from_dict(current, key)
            if entry.instance != name:
                raise _Shape(f"{key}.instance", f"{name!r}, the key it is stored under")
            instances[name] = entry
        made_with = document.get("vars") or {}
        if not isinstance(made_with, Mapping):
            raise _Shape("vars", "an object")
        others = document.get("alternates") or {}  # schema 1
        if not isinstance(others, Mapping):
            raise _Shape("alternates", "an object")
        for fp, data in others.items():
            alternates[str(fp)] = LockedInstance.from_dict(data, f"alternates.{fp}")
        return cls(pipeline, instances, made_with, alternates)

    @classmethod
    def load(cls, path: Path) -> Lockfile | None:
        """The lockfile at `path`, or None when there is none yet."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise FileAccessError(path=str(path), reason=reason or str(exc)) from exc
        return cls.from_json(text, path)

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_json())


def newest_first(entry: LockedInstance) -> tuple[str, str]:
    """Sort key of results by when they were made (then fingerprint, for a stable order)."""
    return entry.completed_at or "", entry.fingerprint


def _instance_json(current: LockedInstance | None, earlier: Iterable[LockedInstance]) -> str:
    """One instance's line: its current entry (as `json_unnamed`, cached), with its
    newest MAX_EARLIER earlier results, newest first, under `"earlier"`."""
    older = sorted(earlier, key=newest_first, reverse=True)[:MAX_EARLIER]
    if not older:
        return current.json_unnamed if current is not None else "{}"
    listed = "[" + ", ".join(e.json_unnamed for e in older) + "]"
    if current is None:
        return f'{{"earlier": {listed}}}'
    return f'{current.json_unnamed[:-1]}, "earlier": {listed}}}'


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _line(text: str, lineno: int) -> str | None:
    lines = text.splitlines()
    return lines[lineno - 1] if 0 < lineno <= len(lines) else None


def _locate(text: str, file: str, where: str) -> Location:
    """Best effort: the line of the last key named in `where` (after the instance's own key)."""
    parts = [p for p in re.split(r"[.\[\]]", where) if p and not p.isdigit()]
    line_no, col = 1, 1
    lines = text.splitlines()
    index, offset = 0, 0  # where the search goes on: a line, and a column in it
    for part in parts:
        needle = json.dumps(part, ensure_ascii=False) + ":"
        for i in range(index, len(lines)):
            found = lines[i].find(needle, offset if i == index else 0)
            if found >= 0:
                line_no, col = i + 1, found + 1
                index, offset = i, found + len(needle)
                break
    return Location(file, line_no, col)
