"""YAML pipeline file -> validated, typed PipelineSpec (no network, no clock)."""

from __future__ import annotations

import difflib
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from civflow.errors import (
    Diagnostic,
    FileAccessError,
    Location,
    PipelineInvalid,
    PipelineNotFound,
    UsageError,
)
from civflow.loading.model import (
    WORKFLOW_FIELDS,
    PipelineSpec,
    StepSpec,
    deep_merge,
    opted_sets,
    step_defaults,
)
from civflow.loading.schema import pipeline_schema, schema_diagnostics
from civflow.loading.yamlsrc import SourceDoc, load_yaml

__all__ = [
    "MAX_FILE_BYTES",
    "MAX_VAR_DEPTH",
    "STRING_SOURCE",
    "PipelineSpec",
    "SourceDoc",
    "StepSpec",
    "load_pipeline",
    "load_pipeline_text",
    "parse_var_overrides",
    "pipeline_schema",
    "read_source",
]


# A pipeline or vars file larger than this is refused before it is parsed.
MAX_FILE_BYTES = 8 * 2**20
# Where errors in a pipeline given as text (not a file) are located.
STRING_SOURCE = "<string>"
# Variables are JSON data: integers fit in 64 bits, and nesting is this deep at most.
MAX_VAR_DEPTH = 32
_INT_RANGE = range(-(2**63), 2**63)


def read_source(path: Path) -> SourceDoc:
    """Read and parse a pipeline file, refusing anything that is not a YAML mapping."""
    try:
        raw = _read_capped(path)
    except FileNotFoundError:
        raise PipelineNotFound(path=str(path)) from None
    return _load(raw, path)


def _read_capped(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_FILE_BYTES.

    The file is opened without blocking and checked with fstat before reading, so a
    FIFO, a device such as /dev/zero or a directory is refused at once and an endless
    stream is never read past the cap. FileNotFoundError is left to the caller.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise FileAccessError(path=str(path), reason="is a directory") from None
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileAccessError(path=str(path), reason="is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise FileAccessError(
                path=str(path), reason="not a regular file (a device, pipe or socket)")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        try:
            raw = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise PipelineInvalid([Diagnostic(
            f"the file is larger than {MAX_FILE_BYTES // 2**20} MiB", _loc(path, 1, 1),
            hint="pipeline and vars files hold settings, not data; keep them small")])
    return raw


def _load(raw: bytes, path: Path) -> SourceDoc:
    """Decode UTF-8 and parse with the strict, located YAML loader."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        shown = raw.split(b"\n")[line - 1].decode("utf-8", errors="replace")
        raise PipelineInvalid([Diagnostic(
            f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})", _loc(path, line, col),
            hint="save the file as UTF-8", source_line=shown)]) from None
    return _parse(text, str(path), "file")


def _parse(text: str, where: str, what: str) -> SourceDoc:
    """Parse decoded text (a file's, or one given as a string) with the strict loader."""
    if "\x00" in text:
        raise PipelineInvalid([Diagnostic(f"the {what} contains a NUL byte",
                                          Location(where, 1, 1),
                                          hint="is this a binary file?")])
    try:
        return load_yaml(text.removeprefix("\ufeff"), where)
    except RecursionError:
        raise PipelineInvalid([Diagnostic(
            f"the {what} is nested too deeply to read", Location(where, 1, 1),
            hint="lists and mappings nest a few levels, not hundreds")]) from None


def _loc(path: Path, line: int, col: int) -> Location:
    return Location(str(path), line, col)


_LONE_VAR = re.compile(r"^\s*\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
                       r"\s*\}\}\s*$")


def _matrix_axis(doc: SourceDoc, step: str, axis: str, value: Any,
                 variables: Mapping[str, Any]) -> tuple[Any, ...]:
    """A matrix axis's values: a list as written, or the list a variable holds
    (`"{{ product_order }}"`, after --var and --vars-file); then checked alike."""
    if isinstance(value, list):
        return tuple(value)
    where = ("steps", step, "matrix", axis)
    match = _LONE_VAR.match(str(value))
    found: Any = variables
    parts = match.group(1).split(".") if match else []
    for part in parts:
        found = found.get(part) if isinstance(found, Mapping) else None
    if not parts or found is None:
        raise PipelineInvalid([doc.diagnostic(
            f"step '{step}': matrix axis '{axis}' names no variable: {value!r}", where,
            hint=f"declare it under 'vars:' as a list, e.g. {parts[0] if parts else axis}: "
                 "[a, b]")])
    if not isinstance(found, list) or not found:
        got = "an empty list" if isinstance(found, list) else type(found).__name__
        raise PipelineInvalid([doc.diagnostic(
            f"step '{step}': matrix axis '{axis}' must be a non-empty list; "
            f"{'.'.join(parts)} is {got}", where,
            hint=f"give {'.'.join(parts)} a list of values in 'vars:' (or with --var / "
                 "--vars-file)")])
    return tuple(found)


def load_pipeline(path: Path, overrides: Mapping[str, Any] | None = None) -> PipelineSpec:
    """Parse, schema-check and type a pipeline file; apply variable overrides."""
    return _typed(read_source(path), path, overrides)


def load_pipeline_text(text: str, overrides: Mapping[str, Any] | None = None, *,
                       path: Path | None = None) -> PipelineSpec:
    """`load_pipeline` for a pipeline given as text.

    `path` is where the text stands: errors are located there, and includes, the
    lockfile and out/ are found from it as for a file there (it need not exist).
    Without it errors are located at `<string>`, and the pipeline stands for
    `<name>.yaml` in the current folder.
    """
    if not isinstance(text, str):
        raise UsageError(f"a pipeline's text is a str, not {type(text).__name__}",
                         hint="decode it first, or load the file by its path")
    if len(text) > MAX_FILE_BYTES:
        raise PipelineInvalid([Diagnostic(
            f"the text is larger than {MAX_FILE_BYTES // 2**20} MiB",
            Location(str(path) if path else STRING_SOURCE, 1, 1),
            hint="pipelines hold settings, not data; keep them small")])
    where = str(path) if path else STRING_SOURCE
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no YAML parser takes it
        line = text.count("\n", 0, exc.start) + 1
        col = exc.start - (text.rfind("\n", 0, exc.start) + 1) + 1
        raise PipelineInvalid([Diagnostic(
            f"the text holds U+{ord(text[exc.start]):04X}, a lone surrogate, not a character",
            Location(where, line, col),
            hint="it comes from bytes decoded with errors='surrogateescape'; decode them "
                 "as UTF-8")]) from None
    return _typed(_parse(text, where, "text"), path, overrides)


def _typed(doc: SourceDoc, path: Path | None,
           overrides: Mapping[str, Any] | None) -> PipelineSpec:
    """The PipelineSpec of a parsed document: schema-checked, overrides applied."""
    problems = schema_diagnostics(doc)
    if problems:
        raise PipelineInvalid(problems)
    data = doc.data
    if path is None:
        path = Path(f"{data['name']}.yaml")  # the schema allows only names safe on disk
    declared: dict[str, Any] = dict(data.get("vars") or {})
    changed: dict[str, Any] = {}
    for name, value in (overrides or {}).items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            close = difflib.get_close_matches(name, list(declared), n=1)
            raise UsageError(
                f"unknown variable '{name}' (known: {known})",
                hint=f"did you mean '{close[0]}'?" if close else
                f"declare it under 'vars:' in {doc.path} first")
        if declared[name] != value:
            changed[name] = value
        declared[name] = value
    defaults: Mapping[str, Mapping[str, Any]] = data.get("defaults") or {}
    workflow: Mapping[str, Any] = data.get("workflow") or {}
    steps: dict[str, StepSpec] = {}
    for order, (name, raw) in enumerate(data["steps"].items()):
        sets = opted_sets(raw.get("defaults"))
        base, sources = step_defaults(defaults, raw["type"], raw["input"], sets)
        merged, from_defaults = deep_merge(base, raw["input"])
        steps[name] = StepSpec(
            name=name,
            type=raw["type"],
            input=merged,
            needs=tuple(raw.get("needs", ())),
            matrix=tuple((k, _matrix_axis(doc, name, k, v, declared))
                         for k, v in (raw.get("matrix") or {}).items()),
            foreach=raw.get("foreach"),
            key=raw.get("key"),
            when=raw.get("when"),
            timeout=raw.get("timeout"),
            retries=raw.get("retries"),
            priority=raw.get("priority"),
            order=order,
            defaulted=frozenset(from_defaults),
            default_sources={p: sources[p] for p in from_defaults if p in sources},
            default_sets=sets,
            unchecked=raw.get("unchecked", False) is True,
        )
    return PipelineSpec(
        path=path,
        name=data["name"],
        description=data.get("description"),
        vars=declared,
        overrides=changed,
        steps=steps,
        workflow={k: workflow[k] for k in WORKFLOW_FIELDS if k in workflow}
        | ({"priority": workflow["priority"]} if "priority" in workflow else {}),
        tags=tuple(workflow.get("tags", ())),
        doc=doc,
        fuse=os.environ.get("CIVFLOW_FUSE", "1") != "0",
    )


def parse_var_overrides(pairs: Sequence[str], files: Sequence[Path] = ()) -> dict[str, Any]:
    """`--vars-file` mappings, then `--var K=V` pairs; values are read as YAML scalars.

    Files go through the same strict loader as pipelines (no tags, no recursive
    anchors, dates kept as written), and every value must be JSON data: strings,
    64-bit integers, finite numbers, booleans, null, lists and mappings, nested at
    most MAX_VAR_DEPTH deep. A bad file is a located PipelineInvalid; a bad --var is
    a UsageError.
    """
    values: dict[str, Any] = {}
    for file in files:
        values.update(_read_vars_file(file))
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var {pair!r}: expected NAME=VALUE",
                             hint='for example --var subject="a red fox"')
        values[name.strip()] = _var_value(name.strip(), text)
    return values


def _read_vars_file(file: Path) -> dict[str, Any]:
    try:
        raw = _read_capped(file)
    except FileNotFoundError:
        raise UsageError(f"--vars-file {file}: no such file") from None
    try:
        doc = _load(raw, file)
    except PipelineInvalid as exc:
        first = exc.diagnostics[0]
        if first.message.startswith("the pipeline file is empty"):
            return {}  # an empty vars file sets nothing
        if first.message.startswith("the top level must be a mapping"):
            kind = first.message.rpartition(" not ")[2]
            raise PipelineInvalid([Diagnostic(
                f"expected a mapping of variable names to values, not {kind}", first.location,
                hint="a vars file maps variable names to values, e.g. 'subject: a fox'",
                source_line=first.source_line)]) from None
        raise
    problems = [doc.diagnostic(f"variable {'.'.join(map(str, where))}: {problem}", where,
                               hint=_VALUE_HINT)
                for where, problem in _json_problems(doc.data, ())]
    if problems:
        raise PipelineInvalid(problems)
    data: dict[str, Any] = doc.data
    return data


_VALUE_HINT = ("variables hold JSON data: text, integers within 64 bits, finite numbers, "
               "true/false, null, lists and mappings")
_FLOW_START = ("{", "[")
_INTEGER = re.compile(r"[-+]?[0-9][0-9_]*")


def _var_value(name: str, text: str) -> Any:
    """One `--var` value: a YAML scalar, or a [list] / {mapping} written in flow style."""
    stripped = text.strip()
    if not stripped:
        return ""
    flow = stripped.startswith(_FLOW_START)
    if stripped.startswith("!"):
        raise UsageError(f"--var {name}: YAML tags such as {stripped.split()[0]!r} are not "
                         "allowed", hint=f"quote the value to pass it as text: "
                         f"--var {name}=\"'{stripped}'\"")
    try:
        # Continuation lines are indented so that a multi-line value stays inside `value:`.
        doc = _load(("value: " + text.replace("\n", "\n  ")).encode("utf-8"),
                    Path(f"--var {name}"))
    except PipelineInvalid as exc:
        if flow:
            raise UsageError(f"--var {name}: {exc.diagnostics[0].message}",
                             hint=exc.diagnostics[0].hint or "quote the value") from None
        if _INTEGER.fullmatch(stripped):
            raise UsageError(f"--var {name}: the integer is out of range",
                             hint=_VALUE_HINT) from None
        return text  # not valid YAML: the text as written
    value = doc.data.get("value")
    if isinstance(value, dict | list) and not flow:
        return text  # reads as a mapping or list by accident: keep the text
    for where, problem in _json_problems(value, ()):
        path = "".join(f"[{p!r}]" for p in where)
        raise UsageError(f"--var {name}{path}: {problem}", hint=_VALUE_HINT)
    return value


def _json_problems(value: Any, where: tuple[str | int, ...]
                   ) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path, problem) for each part of `value` that is not JSON data."""
    if len(where) > MAX_VAR_DEPTH:
        yield where, f"nested deeper than {MAX_VAR_DEPTH} levels"
        return
    if value is None or isinstance(value, str | bool):
        return
    if isinstance(value, int):
        if value not in _INT_RANGE:
            yield where, "the integer is out of range (it must fit in 64 bits)"
    elif isinstance(value, float):
        if not math.isfinite(value):
            yield where, f"{value} is not a finite number"
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_problems(item, (*where, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                yield where, f"the key {key!r} is not a string"
            else:
                yield from _json_problems(item, (*where, key))
    else:
        yield where, f"a {type(value).__name__} is not JSON data"
