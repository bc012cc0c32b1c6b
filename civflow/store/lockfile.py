"""The committed lockfile: per instance its fingerprint, workflow, cost, output and artifacts.

`pipelines/hero-shot.yaml` is locked by `pipelines/hero-shot.lock.json`. The file is
plain JSON written deterministically for git: sorted keys, final newline, `"schema": 1`,
and each instance on a line of its own, in name order. A pull request's diff then shows
one line per instance a change re-ran and nothing else (a 200-instance sweep is a file of
about 200 lines, not 10,000), unrelated instances never share a diff hunk's changed
lines, and `civflow lock merge` joins two branches entry by entry. It is written
atomically so a crash never leaves half of it behind.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from civflow.errors import Diagnostic, FileAccessError, Location, PipelineInvalid
from civflow.keys import nested_deeper_than
from civflow.names import strip_urls
from civflow.store.atomic import atomic_write_text

__all__ = [
    "SCHEMA",
    "Artifact",
    "LockedInstance",
    "Lockfile",
]

SCHEMA = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# Deeper JSON than this is damage, not a lockfile: outputs nest a few levels.
MAX_DEPTH = 64
_HINT = ("the lockfile is written by `civflow run`; fix the entry by hand, or delete the "
         "file to start afresh (every step then runs again)")


def _plain(value: Any) -> Any:
    """Mappings and tuples made into dicts and lists, so json.dumps accepts them."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
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
            "fingerprint": self.fingerprint, "request": _plain(self.request),
            "seed": self.seed, "workflowId": self.workflow_id, "cost": self.cost,
            "completedAt": self.completed_at, "output": _plain(strip_urls(self.output)),
            "artifacts": [a.to_dict() for a in self.artifacts],
        }
        if self.reroll:
            data["reroll"] = self.reroll
        if self.made_by is not None:
            data["madeBy"] = self.made_by
        return data

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
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "pipeline": self.pipeline,
            "instances": {name: _Json(entry.json_unnamed)
                          for name, entry in self.instances.items()},
        }
        if self.vars:
            document["vars"] = _plain(self.vars)
        if self.alternates:
            document["alternates"] = {fp: _Json(entry.json_named)
                                      for fp, entry in self.alternates.items()}
        return _one_entry_per_line(document, entries=("instances", "alternates"))

    @classmethod
    def from_json(cls, text: str, path: Path | str) -> Lockfile:
        """Parse a lockfile's text; any damage is a PipelineInvalid naming the file."""
        where = str(path)
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
        if schema != SCHEMA:
            raise _Shape("schema", f"{SCHEMA} (this civflow reads lockfile schema {SCHEMA} "
                                   f"only; found {json.dumps(schema)})")
        pipeline = _str(document, "pipeline", "lockfile")
        raw = _mapping(document, "instances", "lockfile")
        instances: dict[str, LockedInstance] = {}
        for name, data in raw.items():
            key = f"instances.{name}"
            if isinstance(data, Mapping) and "instance" not in data:
                data = {**data, "instance": name}
            entry = LockedInstance.from_dict(data, key)
            if entry.instance != name:
                raise _Shape(f"{key}.instance", f"{name!r}, the key it is stored under")
            instances[name] = entry
        made_with = document.get("vars") or {}
        if not isinstance(made_with, Mapping):
            raise _Shape("vars", "an object")
        others = document.get("alternates") or {}
        if not isinstance(others, Mapping):
            raise _Shape("alternates", "an object")
        alternates = {str(fp): LockedInstance.from_dict(data, f"alternates.{fp}")
                      for fp, data in others.items()}
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


class _Json(str):
    """Text that is JSON already (an entry's line), written as it is."""


def _dumps(value: Any) -> str:
    if isinstance(value, _Json):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _one_entry_per_line(document: Mapping[str, Any], entries: tuple[str, ...]) -> str:
    """`document` as JSON with each value of the `entries` mappings on a line of its own.

    Equal to `json.loads` of `json.dumps(document)`; only the line breaks are chosen,
    so that a line is an instance.
    """
    out = ["{"]
    keys = sorted(document)
    for i, key in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        value = document[key]
        if key in entries and isinstance(value, Mapping) and value:
            names = sorted(value)
            out.append(f"  {_dumps(key)}: {{")
            out.extend(f"    {_dumps(name)}: {_dumps(value[name])}"
                       f"{',' if j < len(names) - 1 else ''}" for j, name in enumerate(names))
            out.append(f"  }}{comma}")
        else:
            out.append(f"  {_dumps(key)}: {_dumps(value)}{comma}")
    out.append("}")
    return "\n".join(out) + "\n"


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
