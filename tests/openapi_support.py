"""A discriminator-aware validator over the official Civitai OpenAPI document, for tests.

Plain jsonschema rejects valid bodies against this document: every level of an
`allOf` chain says `additionalProperties: false` on its own part, and subtypes
are chosen through `discriminator.mapping`. So instead of handing the document to
jsonschema as is, each level of an instance is validated against a *flattened*
schema: `$ref`s resolved, the discriminator's mapped schema picked by the
instance's own property value, and the `allOf` parts merged (union of properties
and required, `additionalProperties: false` applied to the union). Keywords of
one level are then checked with jsonschema Draft 2020-12, and the walk recurses
into properties, additional properties and items by hand.

The document is read from `<repo>/../shared/civitai-openapi.json` (or the file
`CIVFLOW_OPENAPI` names) and never copied into the repository. Without it the
conformance tests skip, and the run says so in one line; under `CI=true` they fail,
because CI always has the document.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

OPENAPI_PATH: Path = Path(os.environ.get("CIVFLOW_OPENAPI") or (
    Path(__file__).resolve().parent.parent.parent / "shared" / "civitai-openapi.json"))
# Every skip for want of the document carries this, so the run can count them.
ABSENT = "conformance: the official OpenAPI document is absent"

_SCHEMA_PREFIX = "#/components/schemas/"
# Keywords handled by the walk itself rather than by jsonschema at one level.
_STRUCTURAL = frozenset({
    "$ref", "allOf", "anyOf", "oneOf", "discriminator", "properties",
    "additionalProperties", "items", "prefixItems", "not", "if", "then", "else",
})
# Response media types whose schema describes the body, in order of preference.
_MEDIA_TYPES = ("application/json", "application/problem+json", "text/plain")
# .NET writes named groups as (?<name>...); Python's re spells them (?P<name>...).
_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")


@cache
def load_openapi() -> dict[str, Any]:
    """The parsed OpenAPI document (read once per test session)."""
    with OPENAPI_PATH.open(encoding="utf-8") as fh:
        doc: dict[str, Any] = json.load(fh)
    return doc


def require_openapi() -> OpenApi:
    """The validator over the official document, or skip the calling test when it is absent."""
    skip_without_openapi()
    return _openapi()


def require_shared(path: Path) -> None:
    """Skip when a file of ../shared is absent (a contributor's clone); fail under CI=true."""
    if path.is_file():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have {path}")
    pytest.skip(f"{ABSENT} ({path})")


def skip_without_openapi() -> None:
    """Skip the calling test when the document is absent; fail under CI=true."""
    if OPENAPI_PATH.is_file():
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must have the official OpenAPI document at {OPENAPI_PATH}")
    pytest.skip(f"{ABSENT} ({OPENAPI_PATH})")


@cache
def _openapi() -> OpenApi:
    return OpenApi(load_openapi())


def _fmt(path: tuple[str | int, ...]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _python_pattern(pattern: str) -> str | None:
    translated = _NAMED_GROUP.sub("(?P<", pattern)
    try:
        re.compile(translated)
    except re.error:
        return None  # a construct Python cannot express; the check is dropped, not faked
    return translated


class OpenApi:
    """Validates instances against named schemas and declared responses of the document."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self.notes: list[str] = []  # operations/statuses found to declare no body schema
        self._disc_props = self._discriminator_properties()
        self._flat_cache: dict[tuple[Any, ...], tuple[dict[str, Any], tuple[str, ...]]] = {}

    # -- public -----------------------------------------------------------------

    def schema_names(self) -> list[str]:
        return sorted(self.document["components"]["schemas"])

    def schema(self, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.document["components"]["schemas"][name]
        return found

    def errors(self, schema_name: str, instance: object) -> list[str]:
        """Every reason `instance` is not a valid `schema_name`; [] when it is."""
        if schema_name not in self.document["components"]["schemas"]:
            raise KeyError(f"no schema named {schema_name!r} in the OpenAPI document")
        return self._check({"$ref": _SCHEMA_PREFIX + schema_name}, instance, ())

    def response_schema(
        self, path_template: str, method: str, status: int,
    ) -> dict[str, Any] | None:
        """The declared body schema of one response, or None when none is declared."""
        operation = self.document["paths"].get(path_template, {}).get(method.lower())
        if operation is None:
            raise KeyError(f"no operation {method.upper()} {path_template} in the OpenAPI document")
        responses = operation.get("responses", {})
        response = responses.get(str(status), responses.get("default"))
        if response is None:
            return None
        content = response.get("content") or {}
        for media in _MEDIA_TYPES:
            if media in content and "schema" in content[media]:
                schema: dict[str, Any] = content[media]["schema"]
                return schema
        return None

    def declared_statuses(self, path_template: str, method: str) -> list[str]:
        operation = self.document["paths"][path_template][method.lower()]
        return sorted(operation.get("responses", {}))

    def response_errors(
        self, path_template: str, method: str, status: int, instance: object,
    ) -> list[str]:
        """Errors of a response body against the schema declared for that operation and status.

        When the document declares no body schema for it, returns [] and records a note
        in `self.notes` (so a caller can tell "valid" from "nothing to check").
        """
        schema = self.response_schema(path_template, method, status)
        if schema is None:
            self.notes.append(f"{method.upper()} {path_template} {status}: no body schema declared")
            return []
        return self._check(schema, instance, ())

    # -- flattening ---------------------------------------------------------------

    def _discriminator_properties(self) -> tuple[str, ...]:
        names: set[str] = set()

        def walk(node: object) -> None:
            if isinstance(node, dict):
                disc = node.get("discriminator")
                if isinstance(disc, dict) and "propertyName" in disc:
                    names.add(disc["propertyName"])
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.document.get("components", {}))
        return tuple(sorted(names))

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise KeyError(f"only local $refs are supported, got {ref!r}")
        node: Any = self.document
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        resolved: dict[str, Any] = node
        return resolved

    def _flatten(
        self, node: Mapping[str, Any], instance: object, consumed: frozenset[int],
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """One level of `node` for `instance`: refs, discriminators and allOf merged away.

        `consumed` holds the discriminators already followed on the way here, so that a
        mapped subschema whose allOf points back at its base does not loop.
        """
        if set(node) != {"$ref"}:
            return self._flatten_uncached(node, instance, consumed)
        # Only whole `$ref`s are cached: their key is a stable string, and the result
        # depends on the instance only through its discriminator property values.
        values: tuple[object, ...] = ()
        if isinstance(instance, dict):
            values = tuple(
                v if isinstance(v, (str, int, float, bool, type(None))) else "<object>"
                for v in (instance.get(p, "<absent>") for p in self._disc_props)
            )
        key = (node["$ref"], consumed, values)
        hit = self._flat_cache.get(key)
        if hit is None:
            hit = self._flatten_uncached(node, instance, consumed)
            self._flat_cache[key] = hit
        return hit

    def _flatten_uncached(
        self, node: Mapping[str, Any], instance: object, consumed: frozenset[int],
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        problems: list[str] = []
        if "$ref" in node:
            target, problems_t = self._flatten(self._resolve(node["$ref"]), instance, consumed)
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            if not siblings:
                return target, problems_t
            own, problems_o = self._flatten(siblings, instance, consumed)
            return _merge([target, own]), problems_t + problems_o

        disc = node.get("discriminator")
        if isinstance(disc, dict) and id(disc) not in consumed and isinstance(instance, dict):
            prop = disc["propertyName"]
            mapping: dict[str, str] = disc.get("mapping", {})
            value = instance.get(prop)
            if isinstance(value, str) and value in mapping:
                base_plain = {k: v for k, v in node.items() if k != "discriminator"}
                mapped, problems_m = self._flatten(
                    {"$ref": mapping[value]}, instance, consumed | {id(disc)})
                # The mapped schema normally includes its base through allOf; merging the
                # plain base again is harmless and covers a mapped schema that does not.
                base, problems_b = self._flatten(base_plain, instance, consumed | {id(disc)})
                return _merge([base, mapped]), problems_m + problems_b
            if value is not None or prop in node.get("required", ()):
                choices = ", ".join(sorted(mapping))
                problems.append(f"{prop!r} = {value!r} is not one of the mapped values: {choices}")

        own = {k: v for k, v in node.items() if k not in ("allOf", "discriminator")}
        parts = [own]
        for part in node.get("allOf", ()):
            flat, part_problems = self._flatten(part, instance, consumed)
            parts.append(flat)
            problems.extend(part_problems)
        return _merge(parts), tuple(problems)

    # -- validation walk ------------------------------------------------------------

    def _check(
        self, node: Mapping[str, Any] | bool, instance: object, path: tuple[str | int, ...],
    ) -> list[str]:
        if node is True:
            return []
        if node is False:
            return [f"{_fmt(path)}: no value is allowed here"]
        flat, problems = self._flatten(node, instance, frozenset())
        out = [f"{_fmt(path)}: {p}" for p in problems]
        if problems:
            return out  # the subtype is unknown, so its fields cannot be judged

        shallow = {k: v for k, v in flat.items() if k not in _STRUCTURAL}
        if isinstance(shallow.get("pattern"), str):
            pattern = _python_pattern(shallow["pattern"])
            if pattern is None:
                del shallow["pattern"]
            else:
                shallow["pattern"] = pattern
        props: dict[str, Any] = flat.get("properties", {})
        additional = flat.get("additionalProperties", True)
        if isinstance(instance, dict) and additional is False:
            for extra in sorted(set(instance) - set(props)):
                out.append(f"{_fmt(path)}: additional property {extra!r} is not allowed")
        for error in sorted(Draft202012Validator(shallow).iter_errors(instance), key=str):
            where = path + tuple(error.absolute_path)
            out.append(f"{_fmt(where)}: {error.message}")

        if isinstance(instance, dict):
            for name in sorted(instance, key=str):
                sub = props.get(name, additional if additional is not False else None)
                if isinstance(sub, (dict, bool)) and sub is not False:
                    out.extend(self._check(sub, instance[name], (*path, name)))
        if isinstance(instance, list) and isinstance(flat.get("items"), (dict, bool)):
            for index, item in enumerate(instance):
                out.extend(self._check(flat["items"], item, (*path, index)))
        if "anyOf" in flat or "oneOf" in flat:
            key = "anyOf" if "anyOf" in flat else "oneOf"
            passing = [b for b in flat[key] if not self._check(b, instance, path)]
            if not passing:
                out.append(f"{_fmt(path)}: matches none of the {key} alternatives")
            elif key == "oneOf" and len(passing) > 1:
                out.append(f"{_fmt(path)}: matches {len(passing)} oneOf alternatives, expected one")
        if "not" in flat and not self._check(flat["not"], instance, path):
            out.append(f"{_fmt(path)}: must not match the 'not' schema")
        return out


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Union of flattened allOf parts: properties combined, required united, strictness kept."""
    merged: dict[str, Any] = {}
    properties: dict[str, list[Any]] = {}
    required: list[str] = []
    strict = False
    additional: Any = None
    for part in parts:
        for key, value in part.items():
            if key == "properties":
                for name, sub in value.items():
                    # Bases reached again through a mapping repeat the same subschemas;
                    # keep each once (by identity) so chains do not grow at every level.
                    seen = properties.setdefault(name, [])
                    for piece in _pieces(sub):
                        if all(piece is not old for old in seen):
                            seen.append(piece)
            elif key == "required":
                required.extend(r for r in value if r not in required)
            elif key == "additionalProperties":
                if value is False:
                    strict = True
                elif additional is None:
                    additional = value
            elif key == "type" and "type" in merged:
                merged["type"] = _intersect_types(merged["type"], value)
            else:
                merged[key] = value
    if properties:
        merged["properties"] = {
            name: seen[0] if len(seen) == 1 else {"allOf": seen}
            for name, seen in properties.items()
        }
    if required:
        merged["required"] = required
    if strict:
        merged["additionalProperties"] = False
    elif additional is not None:
        merged["additionalProperties"] = additional
    return merged


def _pieces(sub: Any) -> list[Any]:
    """The conjuncts of a property schema built by `_merge`, so merges stay flat."""
    if isinstance(sub, dict) and set(sub) == {"allOf"}:
        return [piece for part in sub["allOf"] for piece in _pieces(part)]
    return [sub]


def _intersect_types(a: str | list[str], b: str | list[str]) -> str | list[str]:
    left = [a] if isinstance(a, str) else list(a)
    right = [b] if isinstance(b, str) else list(b)
    both = [t for t in left if t in right]
    if not both:
        return right  # contradictory parts: keep the more specific (later) one
    return both[0] if len(both) == 1 else both
