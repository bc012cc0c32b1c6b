"""The catalog agrees with the official OpenAPI document (skipped when the document is absent)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from civflow.catalog import Variant, check_input, input_variants
from tests.openapi_support import OpenApi, require_openapi, require_shared

SEED_REQUEST = Path(__file__).resolve().parents[3] / "shared" / "seed-request.json"
VARIANTS = input_variants()
# Enumerated fields compared member for member with the document.
ENUM_FIELDS = ("sampleMethod", "schedule", "sampler", "scheduler", "outputFormat", "resolution",
               "uCache", "format", "model", "mode", "aspectRatio", "duration")


def _id(variant: Variant) -> str:
    return "-".join([variant.step_type, *variant.discriminators.values()])


def _template(variant: Variant, step_input: dict[str, Any]) -> dict[str, Any]:
    return {"steps": [{"$type": variant.step_type, "input": step_input}], "currencies": []}


@pytest.fixture(scope="module")
def api() -> OpenApi:
    return require_openapi()


def _input_schema(api: OpenApi, variant: Variant) -> dict[str, Any]:
    """The document's flattened input schema for the variant's example."""
    step = api._flatten({"$ref": "#/components/schemas/WorkflowStepTemplate"},
                        {"$type": variant.step_type}, frozenset())[0]
    flat, problems = api._flatten(step["properties"]["input"], variant.example, frozenset())
    assert problems == ()
    return flat


def _enum_of(api: OpenApi, schema: object) -> set[str] | None:
    """Enum members of a (possibly allOf-combined, $ref'd) property schema."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return _enum_of(api, api._resolve(schema["$ref"]))
    found: set[str] | None = set(schema["enum"]) if "enum" in schema else None
    for part in schema.get("allOf", ()):
        sub = _enum_of(api, part)
        if sub is not None:
            found = sub if found is None else found & sub
    return found


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_example_is_valid_for_both(api: OpenApi, variant: Variant) -> None:
    assert check_input(variant.step_type, variant.example) == []
    assert api.errors("WorkflowTemplate", _template(variant, variant.example)) == []


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_example_with_optional_fields_is_valid_for_both(api: OpenApi, variant: Variant) -> None:
    assert variant.extras or variant.step_type == "echo"
    for name, value in variant.extras.items():
        one = {**variant.example, name: value}
        assert check_input(variant.step_type, one) == [], name
        assert api.errors("WorkflowTemplate", _template(variant, one)) == [], name
    full = {**variant.example, **variant.extras}
    assert check_input(variant.step_type, full) == []
    assert api.errors("WorkflowTemplate", _template(variant, full)) == []


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_required_fields_agree(api: OpenApi, variant: Variant) -> None:
    official = set(_input_schema(api, variant).get("required", ()))
    ours = set(variant.schema.get("required", ()))
    assert ours == official


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_enum_members_agree(api: OpenApi, variant: Variant) -> None:
    official = _input_schema(api, variant)["properties"]
    compared = 0
    for name in ENUM_FIELDS:
        ours = variant.schema["properties"].get(name, {}).get("enum")
        if ours is None:
            continue
        assert set(ours) == _enum_of(api, official[name]), name
        compared += 1
    if variant.step_type in ("imageGen",):
        assert compared >= 3  # outputFormat and the engine's sampler pair at least


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_catalog_fields_exist_in_the_document(api: OpenApi, variant: Variant) -> None:
    official = set(_input_schema(api, variant)["properties"])
    assert set(variant.schema["properties"]) <= official


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_missing_required_field_is_rejected_by_both(api: OpenApi, variant: Variant) -> None:
    for name in variant.schema.get("required", ()):
        if name in variant.discriminators:
            continue
        body = {k: v for k, v in variant.example.items() if k != name}
        assert any(i.message == f"missing required field {name!r}"
                   for i in check_input(variant.step_type, body))
        assert api.errors("WorkflowTemplate", _template(variant, body)) != []


def test_seed_request_is_rejected_by_both(api: OpenApi) -> None:
    require_shared(SEED_REQUEST)
    body = json.loads(SEED_REQUEST.read_text(encoding="utf-8"))["request"]["body"]
    step = body["steps"][0]
    issues = check_input(step["$type"], step["input"])
    assert [i.message for i in issues] == ["imageGen has no engine 'sdxl'"]
    assert api.errors("WorkflowTemplate", {"steps": [step], "currencies": []}) != []
    # Fixed engine only: the sampler and the LoRA list are still wrong for both.
    fixed = {**step["input"], "engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage"}
    ours = {i.path for i in check_input("imageGen", fixed)}
    assert ours == {("additionalNetworks",), ("sampler",)}
    theirs = api.errors("WorkflowTemplate",
                        {"steps": [{"$type": "imageGen", "input": fixed}], "currencies": []})
    assert sorted(theirs) == [
        "$.steps[0].input: additional property 'additionalNetworks' is not allowed",
        "$.steps[0].input: additional property 'sampler' is not allowed",
    ]
