"""YAML pipeline file -> validated, typed PipelineSpec (no network, no clock)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from civflow.errors import (
    Diagnostic,
    FileAccessError,
    Location,
    PipelineInvalid,
    PipelineNotFound,
    UsageError,
)
from civflow.spec.model import WORKFLOW_FIELDS, PipelineSpec, StepSpec, deep_merge
from civflow.spec.schema import pipeline_schema, schema_diagnostics
from civflow.spec.yamlsrc import SourceDoc, load_yaml

__all__ = [
    "PipelineSpec",
    "SourceDoc",
    "StepSpec",
    "load_pipeline",
    "parse_var_overrides",
    "pipeline_schema",
    "read_source",
]


def read_source(path: Path) -> SourceDoc:
    """Read and parse a pipeline file, refusing anything that is not a YAML mapping."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PipelineNotFound(path=str(path)) from None
    except IsADirectoryError:
        raise FileAccessError(path=str(path), reason="is a directory") from None
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        shown = raw.split(b"\n")[line - 1].decode("utf-8", errors="replace")
        raise PipelineInvalid([Diagnostic(
            f"the file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})", _loc(path, line, col),
            hint="save the file as UTF-8", source_line=shown)]) from None
    if "\x00" in text:
        raise PipelineInvalid([Diagnostic("the file contains a NUL byte", _loc(path, 1, 1),
                                          hint="is this a binary file?")])
    return load_yaml(text.removeprefix("\ufeff"), str(path))


def _loc(path: Path, line: int, col: int) -> Location:
    return Location(str(path), line, col)


def load_pipeline(path: Path, overrides: Mapping[str, Any] | None = None) -> PipelineSpec:
    """Parse, schema-check and type a pipeline file; apply variable overrides."""
    doc = read_source(path)
    problems = schema_diagnostics(doc)
    if problems:
        raise PipelineInvalid(problems)
    data = doc.data
    declared: dict[str, Any] = dict(data.get("vars") or {})
    for name, value in (overrides or {}).items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            close = difflib.get_close_matches(name, list(declared), n=1)
            raise UsageError(
                f"unknown variable '{name}' (known: {known})",
                hint=f"did you mean '{close[0]}'?" if close else
                f"declare it under 'vars:' in {path} first")
        declared[name] = value
    defaults: Mapping[str, Mapping[str, Any]] = data.get("defaults") or {}
    workflow: Mapping[str, Any] = data.get("workflow") or {}
    steps: dict[str, StepSpec] = {}
    for order, (name, raw) in enumerate(data["steps"].items()):
        merged, from_defaults = deep_merge(defaults.get(raw["type"], {}), raw["input"])
        steps[name] = StepSpec(
            name=name,
            type=raw["type"],
            input=merged,
            needs=tuple(raw.get("needs", ())),
            matrix=tuple((k, tuple(v)) for k, v in (raw.get("matrix") or {}).items()),
            foreach=raw.get("foreach"),
            when=raw.get("when"),
            timeout=raw.get("timeout"),
            retries=raw.get("retries"),
            priority=raw.get("priority"),
            order=order,
            defaulted=frozenset(from_defaults),
        )
    return PipelineSpec(
        path=path,
        name=data["name"],
        description=data.get("description"),
        vars=declared,
        steps=steps,
        workflow={k: workflow[k] for k in WORKFLOW_FIELDS if k in workflow}
        | ({"priority": workflow["priority"]} if "priority" in workflow else {}),
        tags=tuple(workflow.get("tags", ())),
        doc=doc,
    )


def parse_var_overrides(pairs: Sequence[str], files: Sequence[Path] = ()) -> dict[str, Any]:
    """`--vars-file` mappings, then `--var K=V` pairs; values are read as YAML scalars."""
    values: dict[str, Any] = {}
    for file in files:
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UsageError(f"--vars-file {file}: no such file") from None
        except OSError as exc:
            raise FileAccessError(path=str(file), reason=exc.strerror or str(exc)) from None
        except yaml.YAMLError as exc:
            raise UsageError(f"--vars-file {file}: invalid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--vars-file {file}: expected a mapping of variable names to values")
        values.update(loaded)
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--var {pair!r}: expected NAME=VALUE",
                             hint='for example --var subject="a red fox"')
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        # A value that reads as a mapping or list by accident stays text unless it is JSON-ish.
        if isinstance(value, dict | list) and not text.lstrip().startswith(("{", "[")):
            value = text
        values[name.strip()] = value
    return values
