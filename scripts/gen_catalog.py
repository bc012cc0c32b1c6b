"""Generate civflow's catalog data from the official Civitai OpenAPI document.

Reads `../shared/civitai-openapi.json` (or `--openapi PATH`, or the file the environment
variable CIVFLOW_OPENAPI names) and writes `civflow/catalog/_generated/catalog.json`:
for every step `$type` and every discriminated input variant (engine → ecosystem /
version / provider → operation, as the document's `discriminator.mapping` chains say),
the input schema as facts only, the output schema, and a minimal body built from those
facts. Only a whitelist of JSON Schema keywords is kept (types, required, enums, bounds,
defaults, formats, patterns, references): no description, summary, title or example
text of the document is ever written. The file records the document's `info.version` and
sha256, so `--check` can tell when the committed data is stale (exit status 1).

    python scripts/gen_catalog.py            # regenerate
    python scripts/gen_catalog.py --check    # exit 1 when the committed data is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OPENAPI = ROOT.parent / "shared" / "civitai-openapi.json"
OUTPUT = ROOT / "civflow" / "catalog" / "_generated" / "catalog.json"
FORMAT_VERSION = 1

_PREFIX = "#/components/schemas/"
# JSON Schema keywords that state facts; everything else (prose, examples, readOnly…) is dropped.
_SCALAR_KEYWORDS = (
    "type", "enum", "const", "default", "format", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
    "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties", "required",
)
_SCHEMA_KEYWORDS = ("items", "additionalProperties", "propertyNames", "not", "contains")
_LIST_KEYWORDS = ("anyOf", "oneOf", "prefixItems")


_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")


def scalar(key: str, value: Any) -> Any:
    """A keyword's value; a .NET pattern's named groups `(?<n>` respelt `(?P<n>`."""
    if key == "pattern" and isinstance(value, str):
        return _NAMED_GROUP.sub("(?P<", value)
    return value


class Generator:
    """Walks the document once; `defs` collects every referenced component schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.schemas: dict[str, Any] = document["components"]["schemas"]
        self.defs: dict[str, Any] = {}

    # -- facts of one schema ------------------------------------------------------------

    def facts(self, node: Any) -> Any:
        """`node` with prose dropped, refs pointed at `$defs` (and those defs collected)."""
        if isinstance(node, bool):
            return node
        if not isinstance(node, dict):
            return {}
        if "$ref" in node:
            name = self.ref_name(node["$ref"])
            self.define(name)
            return {"$ref": f"#/$defs/{name}"}
        if "allOf" in node or "discriminator" in node:
            return self.flatten_node(node)
        out: dict[str, Any] = {}
        for key in _SCALAR_KEYWORDS:
            if key in node:
                out[key] = scalar(key, node[key])
        for key in _SCHEMA_KEYWORDS:
            if key in node:
                out[key] = self.facts(node[key])
        for key in _LIST_KEYWORDS:
            if key in node:
                out[key] = [self.facts(part) for part in node[key]]
        if "properties" in node:
            out["properties"] = {k: self.facts(v) for k, v in node["properties"].items()}
        return out

    @staticmethod
    def ref_name(ref: str) -> str:
        if not ref.startswith(_PREFIX):
            raise SystemExit(f"gen_catalog: unsupported $ref {ref!r}")
        return ref[len(_PREFIX):]

    def define(self, name: str) -> None:
        if name in self.defs:
            return
        self.defs[name] = {}  # placeholder first: schemas may refer to themselves
        raw = self.schemas[name]
        disc = self.own_discriminator(raw)
        if disc is None:
            self.defs[name] = self.flatten(name)
            return
        # A polymorphic schema used as a field: one branch per mapped subtype.
        prop, mapping = disc["propertyName"], disc.get("mapping", {})
        branches = []
        for key in sorted(mapping):
            target = self.ref_name(mapping[key])
            self.define_leaf(target, {prop: key})
            branches.append({"if": {"properties": {prop: {"const": key}}, "required": [prop]},
                             "then": {"$ref": f"#/$defs/{target}"}})
        self.defs[name] = {"type": "object", "required": [prop],
                           "properties": {prop: {"enum": sorted(mapping)}},
                           "allOf": branches}

    def define_leaf(self, name: str, fixed: dict[str, str]) -> None:
        if name in self.defs:
            return
        self.defs[name] = {}
        self.defs[name] = self.flatten(name, fixed)

    @staticmethod
    def own_discriminator(raw: dict[str, Any]) -> dict[str, Any] | None:
        """The discriminator a schema declares itself (not one inherited from its base)."""
        if "discriminator" in raw:
            found: dict[str, Any] = raw["discriminator"]
            return found
        for part in raw.get("allOf", ()):
            if "$ref" not in part and "discriminator" in part:
                found = part["discriminator"]
                return found
        return None

    # -- flattening allOf chains ----------------------------------------------------------

    def chain(self, node: dict[str, Any], seen: frozenset[str] = frozenset()) -> list[Any]:
        """The parts of `node`'s allOf chain, most basic first."""
        parts: list[Any] = []
        for part in node.get("allOf", ()):
            if "$ref" in part:
                name = self.ref_name(part["$ref"])
                if name not in seen:
                    parts.extend(self.chain(self.schemas[name], seen | {name}))
            else:
                parts.extend(self.chain(part, seen))
        own = {k: v for k, v in node.items() if k != "allOf"}
        parts.append(own)
        return parts

    def flatten(self, name: str, fixed: dict[str, str] | None = None) -> dict[str, Any]:
        out = self.flatten_node(self.schemas[name])
        for prop, value in (fixed or {}).items():
            out.setdefault("properties", {})[prop] = {"const": value}
            if prop not in out.setdefault("required", []):
                out["required"].append(prop)
        return out

    def flatten_node(self, node: dict[str, Any]) -> dict[str, Any]:
        """One object schema: properties of every level merged, the most derived winning."""
        props: dict[str, Any] = {}
        required: list[str] = []
        strict = False
        out: dict[str, Any] = {}
        for part in self.chain(node):
            for key, value in part.items():
                if key == "properties":
                    for prop, sub in value.items():
                        facts = self.facts(sub)
                        if prop in props and "$ref" not in facts and "$ref" not in props[prop]:
                            props[prop] = {**props[prop], **facts}
                        else:
                            props[prop] = facts
                elif key == "required":
                    required.extend(r for r in value if r not in required)
                elif key == "additionalProperties":
                    if value is False:
                        strict = True
                    else:
                        out[key] = self.facts(value)
                elif key in _SCALAR_KEYWORDS:
                    out[key] = scalar(key, value)
                elif key in _SCHEMA_KEYWORDS:
                    out[key] = self.facts(value)
                elif key in _LIST_KEYWORDS:
                    out[key] = [self.facts(p) for p in value]
        if props:
            out["properties"] = props
        if required:
            out["required"] = required
        if strict:
            out["additionalProperties"] = False
        return out

    # -- variants ---------------------------------------------------------------------------

    def variants(self, node: dict[str, Any], discs: list[tuple[str, str]],
                 name: str | None) -> list[dict[str, Any]]:
        """Every leaf input shape under `node`, with the discriminator values that select it."""
        disc = self.own_discriminator(node) if name else None
        if disc is not None:
            found: list[dict[str, Any]] = []
            for key in sorted(disc.get("mapping", {})):
                target = self.ref_name(disc["mapping"][key])
                found.extend(self.variants(self.schemas[target],
                                           [*discs, (disc["propertyName"], key)], target))
            return found
        schema = self.flatten(name, dict(discs)) if name else self.facts(node)
        # The discriminator values come first, in the order they select.
        if "required" in schema:
            first = [k for k, _ in discs]
            schema["required"] = first + [r for r in schema["required"] if r not in first]
        return [{"discriminators": dict(discs), "schema": schema}]

    def step_types(self) -> dict[str, Any]:
        mapping = self.schemas["WorkflowStepTemplate"]["discriminator"]["mapping"]
        out: dict[str, Any] = {}
        for step_type in sorted(mapping):
            template = self.ref_name(mapping[step_type])
            input_node = self.part_property(template, "input")
            output_node = self.part_property(template.removesuffix("Template"), "output")
            if "$ref" in input_node:
                name = self.ref_name(input_node["$ref"])
                found = self.variants(self.schemas[name], [], name)
            else:
                found = self.variants(input_node, [], None)
            for variant in found:
                variant["minimalBody"] = minimal(variant["schema"], self.defs, 0)
            out[step_type] = {
                "variants": found,
                "output": self.facts(output_node) if output_node else {},
            }
        return out

    def part_property(self, name: str, prop: str) -> dict[str, Any]:
        for part in self.chain(self.schemas[name]):
            found = part.get("properties", {}).get(prop)
            if isinstance(found, dict):
                return found
        return {}


# -- minimal bodies -------------------------------------------------------------------------

_URL_HINTS = ("image", "url", "video", "audio", "media", "source", "mask", "frame")


def minimal(schema: Any, defs: dict[str, Any], depth: int, name: str = "") -> Any:
    """The smallest body the facts allow: required fields only, first enum, lowest bound."""
    if depth > 12 or not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return minimal(defs[schema["$ref"].removeprefix("#/$defs/")], defs, depth + 1, name)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        values = [v for v in schema["enum"] if v is not None]
        return schema.get("default", values[0] if values else None)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return minimal(schema[key][0], defs, depth + 1, name)
    types = schema.get("type", "object" if "properties" in schema else "string")
    kinds = [types] if isinstance(types, str) else [t for t in types if t != "null"]
    kind = kinds[0] if kinds else "null"
    if kind == "object":
        body: dict[str, Any] = {}
        props = schema.get("properties", {})
        branches = schema.get("allOf", ())
        for prop in schema.get("required", ()):
            body[prop] = minimal(props.get(prop, {}), defs, depth + 1, prop)
        for branch in branches:  # a polymorphic def: fill in its first subtype
            if body and all(body.get(k) == v.get("const") for k, v in
                            branch["if"]["properties"].items()):
                sub = minimal(branch["then"], defs, depth + 1, name)
                if isinstance(sub, dict):
                    body.update(sub)
        return body
    if kind == "array":
        count = schema.get("minItems", 0)
        return [minimal(schema.get("items", {}), defs, depth + 1, name) for _ in range(count)]
    if kind in ("integer", "number"):
        if "default" in schema:
            return schema["default"]
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum")
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
        if high is not None and value > high:
            value = high
        step = schema.get("multipleOf")
        if step:
            value = -(-value // step) * step
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return schema.get("default", False)
    if kind == "string":
        if "default" in schema and isinstance(schema["default"], str):
            return schema["default"]
        if schema.get("format") == "uri" or any(h in name.lower() for h in _URL_HINTS):
            return "https://example.com/in.png"
        if schema.get("format") == "date-span":
            return "00:05:00"
        if schema.get("format") == "date-time":
            return "2026-01-01T00:00:00Z"
        if "pattern" in schema and "air" in schema["pattern"]:
            return "urn:air:sdxl:checkpoint:civitai:101055@128078"
        return "x" * max(1, schema.get("minLength", 1))
    return None


# -- entry point ------------------------------------------------------------------------------


def openapi_path(given: str | None) -> Path:
    return Path(given or os.environ.get("CIVFLOW_OPENAPI") or DEFAULT_OPENAPI)


def render(raw: bytes) -> str:
    """The generated file's exact text for one document."""
    document = json.loads(raw)
    gen = Generator(document)
    steps = gen.step_types()
    data = {
        "format": FORMAT_VERSION,
        "openapi": {"version": document.get("info", {}).get("version"),
                    "sha256": hashlib.sha256(raw).hexdigest()},
        "steps": steps,
        "$defs": dict(sorted(gen.defs.items())),
    }
    return json.dumps(data, indent=1, sort_keys=False, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openapi", help="the OpenAPI document (default: ../shared/…)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the committed data differs from a fresh generation")
    parser.add_argument("--output", default=str(OUTPUT), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    source = openapi_path(args.openapi)
    if not source.is_file():
        print(f"gen_catalog: no OpenAPI document at {source}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    text = render(source.read_bytes())
    target = Path(args.output)
    elapsed = time.perf_counter() - started
    if args.check:
        current = target.read_text(encoding="utf-8") if target.is_file() else ""
        if current != text:
            print(f"gen_catalog: {target} is stale; run scripts/gen_catalog.py", file=sys.stderr)
            return 1
        print(f"gen_catalog: {target.name} is current ({elapsed:.2f}s)")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    print(f"gen_catalog: wrote {target} ({elapsed:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
