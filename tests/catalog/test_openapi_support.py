"""The OpenAPI test helper itself: discriminators, allOf chains and responses."""

from __future__ import annotations

from typing import Any

import pytest

from tests.openapi_support import OpenApi, require_openapi

SDXL = {
    "engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage",
    "model": "urn:air:sdxl:checkpoint:civitai:101055@128078", "prompt": "a cat",
    "width": 1024, "height": 1024, "steps": 25, "cfgScale": 7,
    "sampleMethod": "dpm++2m", "schedule": "karras", "seed": 42, "quantity": 2,
    "loras": {"urn:air:sdxl:lora:civitai:123456@789012": 0.8},
}


@pytest.fixture(scope="module")
def api() -> OpenApi:
    return require_openapi()


def template(step_type: str, step_input: dict[str, Any]) -> dict[str, Any]:
    return {"steps": [{"$type": step_type, "input": step_input}], "currencies": []}


def test_sdcpp_sdxl_step_template_is_valid(api: OpenApi) -> None:
    assert api.errors("WorkflowTemplate", template("imageGen", SDXL)) == []


def test_sampler_on_sdcpp_is_an_additional_property(api: OpenApi) -> None:
    errors = api.errors("WorkflowTemplate", template("imageGen", {**SDXL, "sampler": "euler"}))
    assert errors == ["$.steps[0].input: additional property 'sampler' is not allowed"]


def test_unknown_engine_is_reported_with_the_mapped_values(api: OpenApi) -> None:
    errors = api.errors("WorkflowTemplate", template("imageGen", {**SDXL, "engine": "sdxl"}))
    assert len(errors) == 1
    assert errors[0].startswith(
        "$.steps[0].input: 'engine' = 'sdxl' is not one of the mapped values: comfy,")


def test_unknown_step_type_is_reported(api: OpenApi) -> None:
    errors = api.errors("WorkflowTemplate", template("paint", {}))
    assert len(errors) == 1 and "'$type' = 'paint'" in errors[0]


def test_comfy_takes_sampler_and_rejects_sample_method(api: OpenApi) -> None:
    comfy = {"engine": "comfy", "ecosystem": "sdxl", "operation": "createImage",
             "model": SDXL["model"], "prompt": "a cat",
             "sampler": "dpmpp_2m", "scheduler": "karras"}
    assert api.errors("WorkflowTemplate", template("imageGen", comfy)) == []
    bad = api.errors("WorkflowTemplate", template("imageGen", {**comfy, "sampleMethod": "euler"}))
    assert bad == ["$.steps[0].input: additional property 'sampleMethod' is not allowed"]


def test_missing_required_range_and_enum_errors_are_located(api: OpenApi) -> None:
    body = {k: v for k, v in SDXL.items() if k != "prompt"}
    body.update(steps=200, schedule="sometimes")
    errors = api.errors("WorkflowTemplate", template("imageGen", body))
    assert "$.steps[0].input: 'prompt' is a required property" in errors
    assert "$.steps[0].input.steps: 200 is greater than the maximum of 150" in errors
    assert any(e.startswith("$.steps[0].input.schedule: 'sometimes' is not one of") for e in errors)


def test_workflow_template_requires_steps(api: OpenApi) -> None:
    errors = api.errors("WorkflowTemplate", {"currencies": []})
    assert errors == ["$: 'steps' is a required property"]


def test_air_pattern_with_named_groups_is_checked(api: OpenApi) -> None:
    errors = api.errors("WorkflowTemplate", template("imageGen", {**SDXL, "model": "not an air"}))
    assert len(errors) == 1
    assert errors[0].startswith("$.steps[0].input.model: 'not an air' does not match")


def test_validation_problem_details(api: OpenApi) -> None:
    body = {"type": "https://tools.ietf.org/html/rfc9110#section-15.5.1",
            "title": "One or more validation errors occurred.", "status": 400,
            "errors": {"steps[0].input.resolution":
                       ["The value '4k' is not valid for resolution."]}}
    assert api.errors("ValidationProblemDetails", body) == []
    assert api.errors("ValidationProblemDetails", {**body, "errors": {"x": "not a list"}}) != []


def test_unknown_schema_name_raises(api: OpenApi) -> None:
    with pytest.raises(KeyError):
        api.errors("NoSuchSchema", {})


def test_response_errors_use_the_declared_schema(api: OpenApi) -> None:
    assert api.response_errors("/v2/consumer/workflows", "POST", 403, "Insufficient Buzz") == []
    assert api.response_errors("/v2/consumer/workflows", "post", 403, {"x": 1}) != []
    problem = {"title": "Unauthorized", "status": 401}
    assert api.response_errors("/v2/consumer/workflows/{workflowId}", "GET", 401, problem) == []


def test_response_without_body_schema_is_noted(api: OpenApi) -> None:
    assert api.response_errors("/v2/consumer/blobs/{blobId}", "GET", 308, None) == []
    assert api.notes[-1] == "GET /v2/consumer/blobs/{blobId} 308: no body schema declared"


def test_echo_output_and_image_gen_step_response(api: OpenApi) -> None:
    assert api.errors("EchoInput", {"message": "hi"}) == []
    assert api.errors("EchoInput", {"message": "hi", "extra": 1}) != []
