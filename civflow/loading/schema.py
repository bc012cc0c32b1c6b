"""Check a parsed pipeline against schemas/pipeline.schema.json and explain failures in words."""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

from civflow.errors import Diagnostic
from civflow.keys import KeyPath, key_text
from civflow.loading.model import RESERVED_NAMES
from civflow.loading.yamlsrc import SourceDoc

_TYPE_WORDS = {
    "object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
    "number": "a number", "boolean": "true or false", "null": "null",
}

# A matrix axis written as a variable: `"{{ product_order }}"` or `"{{ lists.products }}"`.
_MATRIX_VAR = ("^\\s*\\{\\{\\s*[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)*"
               "\\s*\\}\\}\\s*$")
_PATTERN_WORDS = {
    "^[a-z0-9][a-z0-9_-]{0,63}$":
        "lowercase letters, digits, '-' and '_', starting with a letter or digit, at most 64",
    "^[a-z][a-z0-9_]{0,63}$":
        "lowercase letters, digits and '_', starting with a letter, at most 64",
    "^[A-Za-z_][A-Za-z0-9_]*$": "letters, digits and '_', not starting with a digit",
    "^(\\d+\\.)?\\d{1,2}:\\d{2}:\\d{2}(\\.\\d{1,7})?$": "a TimeSpan such as \"00:10:00\"",
    "^https://": "an https:// URL",
    _MATRIX_VAR: "a list, or a lone template naming a variable that holds one, "
                 "such as \"{{ product_order }}\"",
}


@cache
def pipeline_schema() -> dict[str, Any]:
    """The pipeline JSON Schema: packaged in the wheel, or from the source checkout."""
    packaged = resources.files("civflow.loading").joinpath("pipeline.schema.json")
    if packaged.is_file():
        loaded: dict[str, Any] = json.loads(packaged.read_text(encoding="utf-8"))
        return loaded
    source = FsPath(__file__).resolve().parents[2] / "schemas" / "pipeline.schema.json"
    loaded = json.loads(source.read_text(encoding="utf-8"))
    return loaded


@cache
def _validator() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(pipeline_schema())


def schema_diagnostics(doc: SourceDoc) -> list[Diagnostic]:
    """Every schema violation of `doc`, located and worded for a person, in file order."""
    found: list[Diagnostic] = []
    seen: set[tuple[object, str]] = set()
    for error in _validator().iter_errors(doc.data):
        for diag in _explain(doc, error):
            if (diag.location, diag.message) not in seen:
                seen.add((diag.location, diag.message))
                found.append(diag)
    found += [diag for _path, diag in _unknown_sets(doc)]
    found.sort(key=lambda d: (d.location.line, d.location.col) if d.location else (0, 0))
    return found


def schema_error_paths(doc: SourceDoc) -> frozenset[KeyPath]:
    """The document path of every schema violation of `doc` (a bad name: the entry's path).

    `civflow validate` uses them to leave out what is broken and still check the rest.
    """
    paths: set[KeyPath] = set()
    for error in _validator().iter_errors(doc.data):
        path: KeyPath = tuple(error.absolute_path)
        if "propertyNames" in error.absolute_schema_path and isinstance(error.instance, str):
            path = (*path, error.instance)
        paths.add(path)
    paths |= {path for path, _diag in _unknown_sets(doc)}
    return frozenset(paths)


def _unknown_sets(doc: SourceDoc) -> list[tuple[KeyPath, Diagnostic]]:
    """A step's `defaults: NAME` that names no set under `defaults.sets`: a reference
    inside the file, which a JSON Schema cannot express."""
    data = doc.data if isinstance(doc.data, Mapping) else {}
    defaults = data.get("defaults")
    sets = defaults.get("sets") if isinstance(defaults, Mapping) else None
    known = sorted(sets) if isinstance(sets, Mapping) else []
    steps = data.get("steps")
    out: list[tuple[KeyPath, Diagnostic]] = []
    for name, step in (steps.items() if isinstance(steps, Mapping) else ()):
        chosen = step.get("defaults") if isinstance(step, Mapping) else None
        listed = [(("steps", name, "defaults"), chosen)] if isinstance(chosen, str) else [
            (("steps", name, "defaults", i), c) for i, c in enumerate(chosen)
            if isinstance(c, str)] if isinstance(chosen, list) else []
        for path, wanted in listed:
            if wanted in known:
                continue
            close = difflib.get_close_matches(wanted, known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else \
                f"the sets are: {', '.join(known)}" if known else \
                f"declare it under 'defaults:', as 'sets: {{{wanted}: {{TYPE: {{...}}}}}}'"
            out.append((path, doc.diagnostic(
                f"step '{name}' opts into the default set '{wanted}', which is not defined",
                path, hint=hint)))
    return out


def _where(path: KeyPath) -> str:
    return f"'{key_text(path)}'" if path else "the top level"


def _explain(doc: SourceDoc, error: Any) -> list[Diagnostic]:
    path: KeyPath = tuple(error.absolute_path)
    validator = error.validator
    schema = error.schema
    instance = error.instance
    if "propertyNames" in error.absolute_schema_path:
        # jsonschema reports a bad name with the mapping's path and the name as instance.
        return _explain_names(doc, error, path)
    if validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extras = [k for k in instance if k not in schema.get("properties", {})]
        out = []
        for extra in extras:
            close = difflib.get_close_matches(extra, known, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else (
                f"known keys here: {', '.join(known)}" if known else None)
            out.append(doc.diagnostic(f"unknown key '{extra}' in {_where(path)}",
                                      (*path, extra), key=True, hint=hint))
        return out
    if validator == "required":
        missing = [k for k in schema["required"] if k not in instance]
        declared = set(schema.get("properties", {}))
        extras = [k for k in instance if k not in declared]
        # A misspelt key is reported once, as unknown with a did-you-mean.
        missing = [k for k in missing if not difflib.get_close_matches(k, extras, n=1, cutoff=0.6)]
        return [doc.diagnostic(f"{_where(path)} is missing the required key '{k}'", path,
                               key=bool(path), hint=_required_hint(path, k)) for k in missing]
    if validator == "type":
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        words = " or ".join(str(_TYPE_WORDS.get(t, t)) for t in wanted)
        return [doc.diagnostic(f"{_where(path)} must be {words}, not {_describe(instance)}",
                               path, hint=_type_hint(path, wanted, instance))]
    if validator in ("enum", "const"):
        options = schema.get("enum", [schema.get("const")])
        listed = ", ".join(json.dumps(o) for o in options)
        close = difflib.get_close_matches(str(instance), [str(o) for o in options], n=1)
        hint = f"did you mean {close[0]!r}?" if close else _ENUM_HINTS.get(str(path[-1:]))
        return [doc.diagnostic(f"{_where(path)} must be one of: {listed}; got "
                               f"{json.dumps(instance)}", path, hint=hint)]
    if validator == "pattern":
        words = _PATTERN_WORDS.get(schema["pattern"], f"the pattern {schema['pattern']}")
        return [doc.diagnostic(f"{_where(path)} {json.dumps(instance)} is not valid: "
                               f"expected {words}", path,
                               hint=_pattern_hint(schema["pattern"], instance))]
    if validator in ("minProperties", "minItems"):
        what = "at least one entry" if error.validator_value == 1 else \
            f"at least {error.validator_value} entries"
        hint = ("add a step: a name, then its 'type:' and 'input:'" if path == ("steps",)
                else "list the values to sweep, e.g. seed: [1, 2, 3]"
                if path[-2:-1] == ("matrix",) else None)
        return [doc.diagnostic(f"{_where(path)} needs {what}", path, hint=hint)]
    if validator in ("maxItems", "maxLength"):
        return [doc.diagnostic(f"{_where(path)} is too long: at most {error.validator_value} "
                               f"{'items' if validator == 'maxItems' else 'characters'}", path,
                               hint=_max_hint(path))]
    if validator in ("minimum", "maximum"):
        bound = "at least" if validator == "minimum" else "at most"
        return [doc.diagnostic(f"{_where(path)} must be {bound} {error.validator_value}, "
                               f"got {instance}", path)]
    if validator == "uniqueItems":
        return [doc.diagnostic(f"{_where(path)} lists the same value twice", path)]
    if validator == "not" and path[:1] == ("steps",):
        return [doc.diagnostic(f"step '{path[1]}' has both 'matrix' and 'foreach'",
                               (*path, "foreach"), key=True,
                               hint="use one of them; put a fan-out over a sweep in two steps")]
    if validator == "anyOf" and path[:1] == ("steps",) and len(path) == 2 and \
            isinstance(instance, dict) and "key" in instance:
        # dependentSchemas: `key` names the instances of a foreach or a matrix.
        return [doc.diagnostic(f"step '{path[1]}' has a 'key' but neither 'foreach' nor "
                               "'matrix'", (*path, "key"), key=True,
                               hint="a key names each instance of a fan-out or a sweep; "
                                    "remove it from a single step")]
    return [doc.diagnostic(f"{_where(path)}: {error.message}", path)]


def _explain_names(doc: SourceDoc, error: Any, path: KeyPath) -> list[Diagnostic]:
    # jsonschema reports the offending name as the instance of the sub-error.
    bad = error.instance if isinstance(error.instance, str) else None
    names = [bad] if bad is not None else []
    if not names:
        return [doc.diagnostic(f"{_where(path)}: {error.message}", path)]
    name = names[0]
    if path == ("vars",) and name in RESERVED_NAMES:
        return [doc.diagnostic(f"'{name}' is a reserved name and cannot be a variable",
                               (*path, name), key=True, hint="rename the variable")]
    kinds: dict[KeyPath, str] = {("steps",): "step name", ("vars",): "variable name",
                                 ("defaults", "sets"): "default set name"}
    kind = kinds.get(path, "matrix name" if path[-1:] == ("matrix",) else "name")
    # The pattern comes from the schema itself, so the two cannot drift apart.
    rule = error.schema if isinstance(error.schema, Mapping) else {}
    pattern = str(rule.get("pattern", ""))
    hint = None
    if kind == "step name":
        suggestion = "".join(c if c.isalnum() else "_" for c in name.lower()).lstrip("_0123456789")
        hint = f"for example '{suggestion}'" if suggestion else None
    words = _PATTERN_WORDS.get(pattern, f"the pattern {pattern}")
    return [doc.diagnostic(f"{kind} '{name}' is not valid: expected {words}",
                           (*path, name), key=True, hint=hint)]


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "true or false"
    for kind, word in (("dict", "a mapping"), ("list", "a list"), ("str", "a string"),
                       ("int", "an integer"), ("float", "a number"), ("NoneType", "null")):
        if type(value).__name__ == kind:
            return word
    return type(value).__name__


def _required_hint(path: KeyPath, key: str) -> str | None:
    if path == ():
        return {"version": "add 'version: 1' at the top of the file",
                "name": "add 'name: my-pipeline'",
                "steps": "add a 'steps:' mapping with at least one step"}.get(key)
    if len(path) == 2 and path[0] == "steps":
        return {"type": "e.g. 'type: imageGen'",
                "input": "every step needs an 'input:' mapping, even an empty one: 'input: {}'"
                }.get(key)
    return None


_ENUM_HINTS = {
    "('version',)": "this civflow reads pipeline format 1: write 'version: 1'",
    "('priority',)": "'high' is the most urgent priority Civitai offers",
}


def _slug(text: str, allowed: str) -> str:
    out = "".join(c if c.isalnum() or c in allowed else allowed[0] for c in text.lower())
    return out.strip(allowed).lstrip("0123456789" if allowed == "_" else "")[:64]


def _pattern_hint(pattern: str, instance: Any) -> str | None:
    if pattern.startswith("^(\\d+\\.)?"):
        return "hours:minutes:seconds, e.g. \"00:10:00\" for ten minutes"
    if pattern == "^https://":
        return "Civitai only calls https:// webhooks"
    if pattern == _MATRIX_VAR:
        return ("matrix values are fixed before anything runs: compute the list in 'vars:' "
                "(or pass it with --var / --vars-file) and name that variable here")
    if pattern == "^[a-z0-9][a-z0-9_-]{0,63}$" and isinstance(instance, str):
        slug = _slug(instance, "-_")
        return f"for example '{slug}'" if slug else None
    return None


def _type_hint(path: KeyPath, wanted: list[str], instance: Any) -> str | None:
    last = path[-1] if path else None
    if last == "when":
        return "write true, false, or a template such as \"{{ enabled }}\""
    if "array" in wanted and isinstance(instance, str):
        return f"write a list: [{instance}]"
    if "object" in wanted and isinstance(instance, list):
        return "write 'key: value' lines, without '- ' in front"
    if ("integer" in wanted or "number" in wanted) and isinstance(instance, str):
        return "write a number without quotes, e.g. 'retries: 2'" if last == "retries" \
            else "write a number without quotes"
    if "string" in wanted and not isinstance(instance, str):
        return "put the value in quotes"
    return None


def _max_hint(path: KeyPath) -> str | None:
    if path == ("workflow", "tags"):
        return "civflow adds 3 tags of its own (pipeline, run, instance set) and the API allows 10"
    return None
