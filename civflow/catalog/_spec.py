"""The catalog data generated from the official OpenAPI document (scripts/gen_catalog.py).

`_generated/catalog.json` holds facts only (field names, types, required, enums,
bounds, defaults, formats, discriminators) for every step type and input variant the
document describes, plus each type's output schema; it records the document's version
and sha256. This module turns it into `Variant`s; the hand-written variants of
`_schemas` take precedence where both describe the same discriminator values, because
they add what the document does not say (recipe bounds, the companions SW requires).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from civflow.catalog._schemas import Variant, all_variants

DATA = Path(__file__).resolve().parent / "_generated" / "catalog.json"


@cache
def data() -> dict[str, Any]:
    """The generated file, parsed once."""
    with DATA.open(encoding="utf-8") as fh:
        loaded: dict[str, Any] = json.load(fh)
    return loaded


def openapi_version() -> tuple[str | None, str | None]:
    """(info.version, sha256) of the document the data was generated from."""
    meta = data().get("openapi", {})
    return meta.get("version"), meta.get("sha256")


@cache
def generated_variants() -> tuple[Variant, ...]:
    """Every variant of the document, each schema carrying the shared `$defs`."""
    defs = data()["$defs"]
    out: list[Variant] = []
    for step_type, entry in data()["steps"].items():
        for raw in entry["variants"]:
            schema = {**raw["schema"], "$defs": defs}
            out.append(Variant(step_type, dict(raw["discriminators"]), schema,
                               raw["minimalBody"]))
    return tuple(out)


def output_schema(step_type: str) -> dict[str, Any] | None:
    """The output schema of a step type (with `$defs`), or None when not in the data."""
    entry = data()["steps"].get(step_type)
    if entry is None:
        return None
    return {**entry["output"], "$defs": data()["$defs"]}


def output_kinds(step_type: str) -> tuple[str, ...]:
    """The blob kinds (image, video, audio, …) a step type's output can hold, sorted."""
    defs = data()["$defs"]
    found: set[str] = set()
    seen: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                name = ref.removeprefix("#/$defs/")
                if name.endswith("Blob") and name != "Blob":
                    found.add(name.removesuffix("Blob").lower())
                if name not in seen:
                    seen.add(name)
                    walk(defs.get(name))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data()["steps"].get(step_type, {}).get("output"))
    return tuple(sorted(found))


@cache
def catalogued() -> tuple[Variant, ...]:
    """Every variant civflow checks: the hand-written ones, then the document's others."""
    written = all_variants()
    keys = {(v.step_type, tuple(v.discriminators.items())) for v in written}
    # A hand-written type without discriminators stands for the whole type.
    whole = {v.step_type for v in written if not v.discriminators}
    extra = tuple(v for v in generated_variants()
                  if v.step_type not in whole
                  and (v.step_type, tuple(v.discriminators.items())) not in keys)
    return written + extra
