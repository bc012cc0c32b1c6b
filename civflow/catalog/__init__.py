"""What civflow knows of each Civitai step type: input schemas, output shapes, costs, AIRs.

Pure data and pure functions. Two layers: `_generated/catalog.json`, written by
scripts/gen_catalog.py from the official OpenAPI document (facts only: every step type,
every discriminated input variant, output schemas; it records the document's version and
sha256), and the hand-written layer from civitai-api.md for what the document does not
say (hints for known mistakes, cost formulas, optional output fields, seed fields, and
refined schemas for the variants civflow knew first). Used by pipeline validation, the
planner, the emulator (request validation, pricing, output shapes) and the runner.

`estimate_cost` raises `Unpriced` (a LookupError) where no formula is known: such a step
is priced at run time by `whatif`, never counted as free.

`check_input` rules: a value for which `opaque(value)` is true is a placeholder whose real
value is only known at run time; it counts as present for `required`, and nothing is
checked on or inside it. An unknown step type, engine, ecosystem or operation yields one
ERROR of kind UNKNOWN_TYPE or UNKNOWN_VARIANT and nothing about the fields (they cannot be
checked); the caller decides whether a pipeline's `unchecked: true` lets it through. A
discriminator only known at run time yields one WARNING. Every issue carries its finding
as data (kind, field, expected, got, suggestions) beside its words. Messages are sorted by
path and word-stable: golden tests pin them.

`output_path_issue` says whether a path can exist in a step's output, and marks a path
through a field the step sets only sometimes (kind OPTIONAL), so a template can be required
to guard it.
"""

from __future__ import annotations

from civflow.catalog._air import AIR_PATTERN, Air, parse_air
from civflow.catalog._check import (
    InputIssue,
    IssueKind,
    check_input,
    known_types,
    type_fields,
)
from civflow.catalog._cost import Unpriced, estimate_cost, resource_airs, seed_field
from civflow.catalog._outputs import (
    OutputIssue,
    OutputIssueKind,
    blob_paths,
    image_count,
    output_fields,
    output_path_error,
    output_path_issue,
)
from civflow.catalog._schemas import Variant, all_variants
from civflow.catalog._spec import catalogued, openapi_version, output_kinds, output_schema

Path = tuple[str | int, ...]


def input_variants() -> list[Variant]:
    """The hand-written input shapes, each with a JSON Schema, an example and extras."""
    return list(all_variants())


def catalogued_variants() -> list[Variant]:
    """Every input shape `check_input` knows: the hand-written ones, then the document's."""
    return list(catalogued())


__all__ = [
    "AIR_PATTERN",
    "Air",
    "InputIssue",
    "IssueKind",
    "OutputIssue",
    "OutputIssueKind",
    "Path",
    "Unpriced",
    "Variant",
    "blob_paths",
    "catalogued_variants",
    "check_input",
    "estimate_cost",
    "image_count",
    "input_variants",
    "known_types",
    "openapi_version",
    "output_fields",
    "output_kinds",
    "output_path_error",
    "output_path_issue",
    "output_schema",
    "parse_air",
    "resource_airs",
    "seed_field",
    "type_fields",
]
