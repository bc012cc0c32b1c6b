"""The JSON Schema editors use (yaml-language-server, VS Code), built from the pipeline schema
and the step catalog.

`schemas/pipeline.schema.json` leaves a step's `input` as "an object" and `type` as any
string; this schema knows every step type, and per type and discriminator values
(engine, ecosystem, operation, …) every field with its type, allowed values, bounds and a
short description, so a misspelt type, an unknown engine, an unknown field or a value out
of range is underlined while typing.

One rule above all: the editor is never stricter than `civflow validate`, so a pipeline
that validates never shows an editor error. Hence:
- every value, and every mapping key, may be a Jinja template (`{{ … }}`, `{% … %}`);
- fields the API requires are not required here, because `defaults:` may supply them;
- where the discriminators are not all written in the step (they come from `defaults:`,
  or are templates), the step is checked against every field of its type at once;
- a step marked `unchecked: true` is not checked at all;
- `format` keywords are dropped (civflow does not check them either).

Draft-07, the draft every editor supports. Built by scripts/gen_editor_schema.py into
`_generated/editor.schema.json`, which `editor_schema()` reads.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from civflow import catalog
from civflow.loading.schema import pipeline_schema
from civflow.scaffold._words import COMFY_SET, COMFY_WORKFLOW, FIELD_WORDS, TEMPLATE

Schema = dict[str, Any]

GENERATED = Path(__file__).resolve().parent / "_generated" / "editor.schema.json"
DRAFT = "http://json-schema.org/draft-07/schema#"
# What makes a string a template: civflow renders it before the API sees it.
TEMPLATE_PATTERN = r"\{\{|\{%"
_TEMPLATE_REF: Schema = {"$ref": "#/definitions/template"}
# Python's named groups `(?P<n>` are not JavaScript's; a plain group matches the same.
_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>")
# Keywords of a catalog schema an editor schema keeps; `format` and the rest are dropped.
_KEEP = frozenset({
    "type", "enum", "const", "default", "pattern", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minLength", "maxLength", "minItems", "maxItems",
    "uniqueItems", "minProperties", "maxProperties", "required", "properties",
    "additionalProperties", "patternProperties", "propertyNames", "items", "anyOf", "oneOf",
    "allOf", "if", "then", "else", "not", "$ref", "contains", "description",
})


def editor_schema_path() -> Path:
    """Where this civflow keeps its editor schema: what `.civflow/editor-schema.json`
    links to, so an editor reads the schema of the civflow that validates."""
    return GENERATED


def editor_schema() -> Schema:
    """The shipped editor schema (generated, committed, checked current by a test)."""
    loaded: Schema = json.loads(GENERATED.read_text(encoding="utf-8"))
    return loaded


def editor_schema_text() -> str:
    """The shipped editor schema as the file holds it."""
    return GENERATED.read_text(encoding="utf-8")


def dumps(schema: Schema) -> str:
    """The one serialisation of the schema: stable, so regeneration diffs stay small."""
    return json.dumps(schema, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


# -- facts in words ------------------------------------------------------------------------


def _num(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def facts(node: Mapping[str, Any]) -> str:
    """A catalog field's facts in a few words: `integer, 1 to 150, default 20`."""
    parts: list[str] = []
    kind = node.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind or [])
    named = [k for k in kinds if k != "null"]
    if "enum" in node:
        values = [v for v in node["enum"] if v is not None]
        # Editors list the values themselves; a long list would bury the words.
        shown = ", ".join(json.dumps(v) for v in values) if len(values) <= 8 else \
            f"{len(values)} values"
        parts.append(f"one of {shown}")
    elif "const" in node:
        parts.append(f"always {json.dumps(node['const'])}")
    elif named:
        parts.append(" or ".join(named))
    low, high = node.get("minimum"), node.get("maximum")
    if low is not None and high is not None:
        parts.append(f"{_num(low)} to {_num(high)}")
    elif low is not None:
        parts.append(f"at least {_num(low)}")
    elif high is not None:
        parts.append(f"at most {_num(high)}")
    if "multipleOf" in node:
        parts.append(f"a multiple of {_num(node['multipleOf'])}")
    if "maxLength" in node:
        parts.append(f"at most {node['maxLength']} characters")
    if "maxItems" in node:
        parts.append(f"at most {node['maxItems']} items")
    if str(node.get("pattern", "")).startswith("^(?:urn:)?"):
        parts.append("an AIR such as urn:air:sdxl:checkpoint:civitai:101055@128078")
    if "default" in node and node["default"] is not None:
        parts.append(f"default {json.dumps(node['default'])}")
    if "null" in kinds:
        parts.append("may be null")
    return ", ".join(p for p in parts if p)


def describe(field: str, node: Mapping[str, Any]) -> str:
    """What an editor shows on hover: civflow's words for the field, then its facts."""
    words = FIELD_WORDS.get(field)
    said = facts(node)
    if words and said:
        return f"{words} ({said})"
    return words or (said[:1].upper() + said[1:] + "." if said else "")


# -- catalog schema -> editor schema ---------------------------------------------------------


def _accepts_any_string(node: Mapping[str, Any]) -> bool:
    kind = node.get("type")
    kinds = [kind] if isinstance(kind, str) else kind or []
    return "string" in kinds and not any(
        k in node for k in ("enum", "const", "pattern", "minLength", "maxLength"))


def _ref(ref: str) -> str:
    return "#/definitions/catalog." + ref.removeprefix("#/$defs/")


def _condition(node: Any) -> Any:
    """An `if` of the catalog, kept as it is (required included) with its refs moved."""
    if isinstance(node, dict):
        return {k: (_ref(v) if k == "$ref" else _condition(v)) for k, v in node.items()
                if k != "format"}
    if isinstance(node, list):
        return [_condition(v) for v in node]
    return node


def convert(node: Any, *, top: bool = False, wrap: bool = True) -> Any:
    """A catalog schema for a value, as the editor sees it: templates allowed anywhere.

    `top` strips `required` along the chain of mappings from the step's input down
    (`defaults:` deep-merges into them), not inside list items, whose entries are
    written whole. `wrap` is false for the alternatives of anyOf/oneOf/allOf and the
    branches of if/then: the schema around them already takes a template.
    """
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "$ref":
            out[key] = _ref(value)
        elif key == "pattern":
            out[key] = _NAMED_GROUP.sub("(?:", value)
        elif key == "required":
            if not top:
                out[key] = list(value)
        elif key in ("properties", "patternProperties"):
            out[key] = {name: convert(sub, top=top) for name, sub in value.items()}
        elif key == "additionalProperties":
            out[key] = convert(value, top=top) if isinstance(value, dict) else value
        elif key == "items":
            out[key] = convert(value) if isinstance(value, dict) else \
                [convert(v) for v in value]
        elif key == "propertyNames":
            names = convert(value, wrap=False)
            out[key] = {"anyOf": [names, _TEMPLATE_REF]}
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [convert(v, top=top, wrap=False) for v in value]
        elif key in ("then", "else"):
            out[key] = convert(value, top=top, wrap=False)
        elif key in ("if", "not", "contains"):
            out[key] = _condition(value)
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out or "propertyNames" in out:
        # A mapping key may be a template too.
        out.setdefault("patternProperties", {})[TEMPLATE_PATTERN] = {}
    if not wrap or _accepts_any_string(out):
        return out
    outer: Schema = {"anyOf": [out, _TEMPLATE_REF]}
    for moved in ("description", "default"):
        if moved in out:
            outer[moved] = out.pop(moved)
    return outer


# -- per type and variant ------------------------------------------------------------------


def _key(variant: catalog.Variant) -> str:
    values = ".".join(variant.discriminators.values())
    return f"input.{variant.step_type}" + (f".{values}" if values else "")


def _matches(variant: catalog.Variant) -> Schema:
    """The `if` that selects a variant: all its discriminators written, with its values."""
    return {"properties": {k: {"const": v} for k, v in variant.discriminators.items()},
            "required": list(variant.discriminators)}


def _fields(variant: catalog.Variant) -> dict[str, Any]:
    props = variant.schema.get("properties", {})
    return props if isinstance(props, dict) else {}


def _variant_schema(variant: catalog.Variant, interned: dict[str, Schema]) -> Schema:
    body = {k: v for k, v in variant.schema.items() if k not in ("$defs", "properties")}
    out: Schema = convert(body, top=True, wrap=False)
    out["properties"] = {name: _field(name, sub, interned, variant)
                         for name, sub in _fields(variant).items()}
    out["description"] = f"The input of {variant.label}."
    return out


def _resolved(node: Any, variant: catalog.Variant) -> dict[str, Any]:
    """A field's schema with a reference to the catalog's `$defs` followed, for its facts."""
    if not isinstance(node, dict):
        return {}
    defs = variant.schema.get("$defs") or {}
    inner = node.get("allOf", [node])[0] if len(node.get("allOf", [])) == 1 else node
    ref = inner.get("$ref") if isinstance(inner, dict) else None
    if isinstance(ref, str) and ref.removeprefix("#/$defs/") in defs:
        target = defs[ref.removeprefix("#/$defs/")]
        return {**target, **{k: v for k, v in node.items() if k not in ("$ref", "allOf")}}
    return node


def _field(name: str, node: Any, interned: dict[str, Schema],
           variant: catalog.Variant) -> Schema:
    """One field of an input, converted and described, shared among variants by content."""
    converted = convert(node, top=True)
    text = describe(name, _resolved(node, variant)) or "See the step catalog."
    if text:
        converted = {**converted, "description": text}
    digest = hashlib.sha256(json.dumps([name, converted], sort_keys=True).encode()).hexdigest()
    key = f"field.{name}.{digest[:10]}"
    interned.setdefault(key, converted)
    return {"$ref": f"#/definitions/{key}"}


def _union(step_type: str, variants: list[catalog.Variant], interned: dict[str, Schema],
           *, closed: bool) -> Schema:
    """Every field any variant of the type takes, each with any of its variants' schemas.

    Used where the step does not name its variant in full; `closed` makes an unknown
    field an error (the catalog knows every field of the type).
    """
    fields: dict[str, list[Schema]] = {}
    choices: dict[str, list[str]] = {}
    for variant in variants:
        for name, value in variant.discriminators.items():
            if value not in choices.setdefault(name, []):
                choices[name].append(value)
        for name, node in _fields(variant).items():
            if name in variant.discriminators:
                continue
            ref = _field(name, node, interned, variant)
            if ref not in fields.setdefault(name, []):
                fields[name].append(ref)
    props: dict[str, Schema] = {}
    for name in sorted({*fields, *choices}):
        options = list(fields.get(name, []))
        if name in choices:
            words = FIELD_WORDS.get(name, "Selects the fields that apply.")
            options.insert(0, {"enum": sorted(choices[name]), "description": words})
        if len(options) == 1 and name not in choices:
            props[name] = options[0]  # a field schema: it takes a template already
        else:
            props[name] = {"anyOf": [*options, _TEMPLATE_REF]}
    out: Schema = {"type": "object", "properties": props,
                   "description": f"The input of a {step_type} step."}
    if closed:
        out["additionalProperties"] = False
        out["patternProperties"] = {TEMPLATE_PATTERN: {}}
    return out


def _comfy_file(variants: list[catalog.Variant], interned: dict[str, Schema]) -> Schema:
    """A `comfy` step written as a workflow file and title overrides (civflow's own form)."""
    options = {name: _field(name, node, interned, v) for v in variants
               for name, node in _fields(v).items() if name != "comfyWorkflow"}
    return {
        "type": "object",
        "description": "A comfy step from a workflow file, with node inputs set by title.",
        "properties": {
            "workflow": {"type": "string", "description": COMFY_WORKFLOW},
            "set": {**convert({"type": "object", "additionalProperties": {"type": "object"}}),
                    "description": COMFY_SET},
            **options,
        },
        "additionalProperties": False,
        "patternProperties": {TEMPLATE_PATTERN: {}},
    }


def _per_type(step_type: str, variants: list[catalog.Variant], interned: dict[str, Schema],
              defs: dict[str, Schema]) -> Schema:
    """The `input` schema of one step type: the variant its discriminators name, else all."""
    objects = [v for v in variants if v.schema.get("type") == "object"]
    if not objects:  # an input that is not a mapping: the pipeline format cannot hold it
        return {"description": f"The input of a {step_type} step."}
    if len(objects) == 1 and not objects[0].discriminators:
        key = _key(objects[0])
        defs[key] = _variant_schema(objects[0], interned)
        body: Schema = {"$ref": f"#/definitions/{key}"}
    else:
        _no_subset(step_type, objects)
        branches: list[Schema] = []
        for variant in objects:
            key = _key(variant)
            defs[key] = _variant_schema(variant, interned)
            branches.append({"if": _matches(variant), "then": {"$ref": f"#/definitions/{key}"}})
        union_key = f"input.{step_type}.any"
        defs[union_key] = _union(step_type, objects, interned, closed=True)
        body = {"if": {"anyOf": [b["if"] for b in branches]},
                "then": {"allOf": branches},
                "else": {"$ref": f"#/definitions/{union_key}"}}
    if step_type == "comfy":
        defs["input.comfy.file"] = _comfy_file(objects, interned)
        body = {"if": {"required": ["workflow"]},
                "then": {"$ref": "#/definitions/input.comfy.file"}, "else": body}
    return body


def _near(word: str) -> str:
    """A pattern for the strings one edit away from `word` (a letter added, dropped,
    changed or two swapped) or differing in case only: the typos of a step type."""
    forms: set[str] = set()
    for i in range(len(word) + 1):
        forms.add(re.escape(word[:i]) + "." + re.escape(word[i:]))
        if i < len(word):
            forms.add(re.escape(word[:i]) + "." + re.escape(word[i + 1:]))
            forms.add(re.escape(word[:i] + word[i + 1:]))
        if i + 1 < len(word):
            forms.add(re.escape(word[:i] + word[i + 1] + word[i] + word[i + 2:]))
    forms.update({re.escape(word.lower()), re.escape(word[:1].upper() + word[1:])})
    return "^(?:" + "|".join(sorted(forms)) + ")$"


def _no_subset(step_type: str, variants: Iterable[catalog.Variant]) -> None:
    """Two variants of which one's discriminators hold the other's would both apply."""
    seen = [set(v.discriminators.items()) for v in variants]
    for i, a in enumerate(seen):
        for b in seen[i + 1:]:
            if a <= b or b <= a:
                raise ValueError(f"{step_type}: variants {sorted(a)} and {sorted(b)} overlap")


def _reachable_defs(variants: list[catalog.Variant]) -> dict[str, Any]:
    """The catalog `$defs` the inputs refer to (outputs' are left out)."""
    every: dict[str, Any] = {}
    for variant in variants:
        every.update(variant.schema.get("$defs") or {})
    found: dict[str, Any] = {}
    pending: list[Any] = [v.schema for v in variants]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$defs":
                    continue
                if key == "$ref" and isinstance(value, str):
                    name = value.removeprefix("#/$defs/")
                    if name not in found:
                        found[name] = every[name]
                        pending.append(every[name])
                else:
                    pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)
    return found


# -- the pipeline schema around it -----------------------------------------------------------


def _draft7(node: Any) -> Any:
    """The pipeline schema (2020-12) in draft-07 words: $defs → definitions, and
    dependentRequired → dependencies."""
    if isinstance(node, dict):
        out: Schema = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                out[key] = value.replace("#/$defs/", "#/definitions/")
            elif key == "dependentRequired":
                out["dependencies"] = _draft7(value)
            elif key == "$defs":
                out["definitions"] = _draft7(value)
            elif key in ("$schema", "$id"):
                continue
            else:
                out[key] = _draft7(value)
        return out
    if isinstance(node, list):
        return [_draft7(v) for v in node]
    return node


@cache
def build_editor_schema() -> Schema:
    """The editor schema, built from the pipeline schema and the catalog."""
    base: Schema = _draft7(pipeline_schema())
    variants = list(catalog.catalogued_variants())
    by_type: dict[str, list[catalog.Variant]] = {}
    for variant in variants:
        by_type.setdefault(variant.step_type, []).append(variant)
    interned: dict[str, Schema] = {}
    shapes: dict[str, Schema] = {}
    inputs: dict[str, Schema] = {}
    defaults: dict[str, Schema] = {}
    for step_type in sorted(by_type):
        shapes[f"type.{step_type}"] = _per_type(step_type, by_type[step_type], interned, shapes)
        inputs[step_type] = {"$ref": f"#/definitions/type.{step_type}"}
        objects = [v for v in by_type[step_type] if v.schema.get("type") == "object"]
        if objects:
            defaults[step_type] = _union(step_type, objects, interned, closed=False)
            defaults[step_type]["description"] = (
                f"Input merged under every {step_type} step; the step's own values win.")
    catalog_defs = {f"catalog.{name}": convert(node)
                    for name, node in sorted(_reachable_defs(variants).items())}

    step: Schema = base["definitions"]["step"]
    types = sorted(by_type)
    # The list offered for completion; `else` below makes another type an error.
    step["properties"]["type"] = {
        "anyOf": [{"enum": types}, step["properties"]["type"]],
        "description": "The Civitai step type; civflow's catalog knows "
                       f"{len(types)}. Another type needs 'unchecked: true'.",
    }
    # An unknown type is an error already. A typo of a known type (one letter off, or
    # its case) has its input checked as that type's, as `civflow validate` does, so the
    # other mistakes show at once; any other type, against every field of every type.
    every = [v for v in variants if v.schema.get("type") == "object"]
    shapes["input.any"] = _union("any", every, interned, closed=True)
    shapes["input.any"]["description"] = "The input of a step of a type civflow does not know."
    typos = [{"if": {"properties": {"type": {"pattern": _near(t)}}, "required": ["type"]},
              "then": {"properties": {"input": inputs[t]}}} for t in types]
    checked: Schema = {
        "properties": {"type": {"enum": types}},
        "allOf": [{"if": {"properties": {"type": {"const": t}}, "required": ["type"]},
                   "then": {"properties": {"input": inputs[t]}}} for t in types]
        + [{"if": {"properties": {"type": {"enum": types}}},
            "else": {"if": {"anyOf": [typo["if"] for typo in typos]},
                     "then": {"allOf": typos},
                     "else": {"properties": {"input": {"$ref": "#/definitions/input.any"}}}}}],
    }
    step["if"] = {"properties": {"unchecked": {"const": True}}, "required": ["unchecked"]}
    step["else"] = checked
    base["properties"]["defaults"] = {
        **base["properties"]["defaults"],
        "properties": defaults,
    }
    base["definitions"] = {
        **base["definitions"],
        "template": {"type": "string", "pattern": TEMPLATE_PATTERN, "description": TEMPLATE},
        **dict(sorted(shapes.items())),
        **dict(sorted(interned.items())),
        **catalog_defs,
    }
    version, sha = catalog.openapi_version()
    return {
        "$schema": DRAFT,
        "title": "civflow pipeline (editor schema)",
        "$comment": "Generated by civflow from its pipeline schema and step catalog "
                    f"(Civitai OpenAPI {version}, sha256 {sha}); refresh it with "
                    "'civflow schema --output FILE'.",
        **{k: v for k, v in base.items() if k != "title"},
    }
