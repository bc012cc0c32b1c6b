"""What civflow knows of each Civitai step type: input schemas, output shapes, costs, AIRs.

Pure data and pure functions, written by hand from the facts in civitai-api.md (never
copied from the OpenAPI document). Used by pipeline validation, the planner, the emulator
(request validation, pricing, output shapes) and the runner.

`check_input` rules: a value for which `opaque(value)` is true is a placeholder whose real
value is only known at run time; it counts as present for `required`, and nothing is
checked on or inside it. An unknown step type, engine or ecosystem yields one WARNING
("passed through"); the caller decides whether `--strict` makes it an error. Messages are
sorted by path and word-stable: golden tests pin them.
"""

from __future__ import annotations

from civflow.catalog._air import AIR_PATTERN, Air, parse_air
from civflow.catalog._check import InputIssue, check_input, known_types
from civflow.catalog._cost import estimate_cost, resource_airs, seed_field
from civflow.catalog._outputs import blob_paths, output_path_error
from civflow.catalog._schemas import Variant, all_variants

Path = tuple[str | int, ...]


def input_variants() -> list[Variant]:
    """Every catalogued input shape, with its JSON Schema (2020-12) and a minimal example."""
    return list(all_variants())


__all__ = [
    "AIR_PATTERN",
    "Air",
    "InputIssue",
    "Path",
    "Variant",
    "blob_paths",
    "check_input",
    "estimate_cost",
    "input_variants",
    "known_types",
    "output_path_error",
    "parse_air",
    "resource_airs",
    "seed_field",
]
