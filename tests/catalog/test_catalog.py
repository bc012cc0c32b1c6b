"""Unit tests of the catalog's public functions, messages and hints word for word."""

from __future__ import annotations

from typing import Any

import pytest

import civflow.catalog as catalog
from civflow.catalog import (
    Air,
    InputIssue,
    IssueKind,
    OutputIssueKind,
    blob_paths,
    check_input,
    estimate_cost,
    known_types,
    output_path_error,
    output_path_issue,
    parse_air,
    resource_airs,
    seed_field,
)
from civflow.errors import Severity

SDXL: dict[str, Any] = {"engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage",
                        "model": "urn:air:sdxl:checkpoint:civitai:101055@128078",
                        "prompt": "a cat"}
COMFY = {**SDXL, "engine": "comfy"}
T2I: dict[str, Any] = {"prompt": "a cat", "cfgScale": 7, "seed": 1}
FIELDS_SDCPP_SDXL = tuple(sorted(next(
    v.schema["properties"] for v in catalog.input_variants()
    if v.discriminators == {"engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage"})))
FIELDS_COMFY_SDXL = tuple(sorted(next(
    v.schema["properties"] for v in catalog.input_variants()
    if v.discriminators == {"engine": "comfy", "ecosystem": "sdxl", "operation": "createImage"})))
# Every imageGen engine of the OpenAPI document (the generated catalog knows them all).
IMAGE_ENGINES = ("comfy", "fal", "flux1-kontext", "flux2", "gemini", "google", "grok", "openai",
                 "qwen", "sdcpp", "seedream", "wan")
LORA_LIST = [{"air": "urn:air:sdxl:lora:civitai:200000@250000", "strength": 0.8}]


def is_ref(value: object) -> bool:
    return isinstance(value, dict) and "$ref" in value


def one(step_type: str, step_input: dict[str, Any]) -> InputIssue:
    issues = check_input(step_type, step_input)
    assert len(issues) == 1, issues
    return issues[0]


def test_all_is_curated() -> None:
    for name in catalog.__all__:
        assert hasattr(catalog, name)
    for name in ("check_input", "known_types", "output_path_error", "blob_paths", "seed_field",
                 "resource_airs", "estimate_cost", "parse_air", "input_variants", "InputIssue"):
        assert name in catalog.__all__


def test_known_types() -> None:
    # The hand-written types, and every other type the OpenAPI document describes.
    assert {"chatCompletion", "convertImage", "echo", "imageBackgroundRemoval", "imageGen",
            "imageUpscaler", "promptEnhancement", "textToImage", "videoGen",
            "wdTagging"} <= set(known_types())
    assert len(known_types()) == 45
    assert list(known_types()) == sorted(known_types())


def test_valid_input_has_no_issues() -> None:
    assert check_input("imageGen", {**SDXL, "sampleMethod": "dpm++2m", "schedule": "karras",
                                    "loras": {"urn:air:sdxl:lora:civitai:1@2": 0.5}}) == []


def test_engine_sdxl_points_at_sdcpp_or_comfy() -> None:
    assert one("imageGen", {**SDXL, "engine": "sdxl"}) == InputIssue(
        ("engine",), "imageGen has no engine 'sdxl'",
        "SDXL runs on engine sdcpp or comfy with ecosystem sdxl", Severity.ERROR,
        IssueKind.NOT_ALLOWED, "engine", IMAGE_ENGINES, "sdxl")


def test_engine_flux_on_image_gen() -> None:
    issue = one("imageGen", {"engine": "flux", "prompt": "x"})
    assert issue.message == "imageGen has no engine 'flux'"
    assert issue.hint == ("Flux.1 runs on engine sdcpp or comfy with ecosystem flux1 "
                          "(engine flux1-kontext edits images)")


def test_sampler_on_sdcpp_maps_the_ui_name() -> None:
    assert one("imageGen", {**SDXL, "sampler": "DPM++ 2M Karras"}) == InputIssue(
        ("sampler",), "'sampler' is not a field of imageGen (engine sdcpp, ecosystem sdxl)",
        "sdcpp takes sampleMethod and schedule: use sampleMethod: dpm++2m and schedule: karras",
        Severity.ERROR, IssueKind.UNKNOWN_FIELD, "sampler", FIELDS_SDCPP_SDXL, "DPM++ 2M Karras",
        ("sampleMethod",))


def test_sampler_on_sdcpp_without_a_known_value() -> None:
    assert one("imageGen", {**SDXL, "sampler": "magic"}).hint == (
        "sdcpp takes sampleMethod and schedule; did you mean 'sampleMethod'?")


def test_sample_method_on_comfy() -> None:
    assert one("imageGen", {**COMFY, "sampleMethod": "dpm++2m"}) == InputIssue(
        ("sampleMethod",),
        "'sampleMethod' is not a field of imageGen (engine comfy, ecosystem sdxl)",
        "comfy takes sampler and scheduler: use sampler: dpmpp_2m", Severity.ERROR,
        IssueKind.UNKNOWN_FIELD, "sampleMethod", FIELDS_COMFY_SDXL, "dpm++2m",
        ("sampler",))


def test_comfy_sampler_given_a_ui_name() -> None:
    issue = one("imageGen", {**COMFY, "sampler": "DPM++ 2M Karras"})
    assert issue.message.startswith("'sampler' must be one of: euler, euler_ancestral, ")
    assert issue.message.endswith("; got 'DPM++ 2M Karras'")
    assert issue.hint == "'DPM++ 2M Karras' is sampler: dpmpp_2m with scheduler: karras"


def test_sdcpp_sample_method_given_a_comfy_name() -> None:
    issue = one("imageGen", {**SDXL, "sampleMethod": "dpmpp_2m"})
    assert issue.message == (
        "'sampleMethod' must be one of: euler, heun, dpm2, dpm++2s_a, dpm++2m, dpm++2mv2, ipndm, "
        "ipndm_v, ddim_trailing, euler_a, lcm, res_multistep, res_2s, tcd, er_sde; got 'dpmpp_2m'")
    assert issue.hint == "'dpmpp_2m' is a comfy sampler name; sdcpp calls it dpm++2m"


def test_additional_networks_list_on_image_gen() -> None:
    assert one("imageGen", {**SDXL, "additionalNetworks": LORA_LIST}) == InputIssue(
        ("additionalNetworks",),
        "'additionalNetworks' is not a field of imageGen (engine sdcpp, ecosystem sdxl)",
        "imageGen takes LoRAs as loras: {AIR: strength}, e.g. "
        "loras: {urn:air:sdxl:lora:civitai:200000@250000: 0.8}", Severity.ERROR,
        IssueKind.UNKNOWN_FIELD, "additionalNetworks", FIELDS_SDCPP_SDXL, LORA_LIST)


def test_additional_networks_list_on_text_to_image() -> None:
    assert one("textToImage", {**T2I, "additionalNetworks": LORA_LIST}) == InputIssue(
        ("additionalNetworks",), "'additionalNetworks' must be an object keyed by AIR, got a list",
        "write additionalNetworks: {urn:air:sdxl:lora:civitai:200000@250000: {strength: 0.8}}",
        Severity.ERROR, IssueKind.WRONG_TYPE, "additionalNetworks", ("object",), LORA_LIST)


def test_text_to_image_scheduler_ui_name() -> None:
    issue = one("textToImage", {**T2I, "scheduler": "DPM++ 2M Karras"})
    assert issue.path == ("scheduler",)
    assert issue.hint == "'DPM++ 2M Karras' is written dpM2MKarras"


def test_width_not_divisible_by_16() -> None:
    assert one("imageGen", {**SDXL, "width": 1000}) == InputIssue(
        ("width",), "'width' must be divisible by 16, got 1000", "use 992 or 1008", Severity.ERROR,
        IssueKind.OUT_OF_RANGE, "width", ("16",), 1000, ("992", "1008"))


def test_ranges_types_and_missing_fields() -> None:
    body = {k: v for k, v in SDXL.items() if k != "prompt"}
    issues = check_input("imageGen", {**body, "steps": 200, "quantity": "2", "cfgScale": -1})
    assert [(i.path, i.message) for i in issues] == [
        ((), "missing required field 'prompt'"),
        (("cfgScale",), "'cfgScale' must be at least 0, got -1"),
        (("quantity",), "'quantity' must be an integer, got '2'"),
        (("steps",), "'steps' must be at most 150, got 200"),
    ]


def test_misspelt_field_gets_did_you_mean() -> None:
    issue = one("imageGen", {**SDXL, "negativPrompt": "blurry"})
    assert issue.message == (
        "'negativPrompt' is not a field of imageGen (engine sdcpp, ecosystem sdxl)")
    assert issue.hint == "did you mean 'negativePrompt'?"


def test_clip_skip_on_sdxl() -> None:
    assert one("imageGen", {**SDXL, "clipSkip": 2}).hint == "sdxl does not take clipSkip; remove it"


def test_nested_errors_are_located() -> None:
    issues = check_input("convertImage", {"image": "x", "output": {"format": "bmp"},
                                          "transforms": [{"type": "resize", "width": 5}]})
    assert [(i.path, i.message) for i in issues] == [
        (("output",), "missing required field 'hideMetadata' in 'output'"),
        (("output", "format"), "'output.format' must be one of: jpeg, png, webp, gif; got 'bmp'"),
        (("transforms", 0, "width"),
         "'width' is not a field of 'transforms[0]' in convertImage"),
    ]


def test_opaque_values_count_as_present_and_are_not_checked() -> None:
    ref = {"$ref": "hero", "path": "output.images[0].url"}
    body = {**SDXL, "prompt": ref, "width": ref, "loras": ref}
    assert check_input("imageGen", body, opaque=is_ref) == []
    assert check_input("imageUpscaler", {"image": ref}, opaque=is_ref) == []
    assert check_input("imageUpscaler", ref, opaque=is_ref) == []
    # Without the predicate the same placeholder is just a wrong value.
    assert check_input("imageUpscaler", {"image": ref}) != []


def test_opaque_discriminator_passes_through_with_a_warning() -> None:
    issues = check_input("imageGen", {**SDXL, "engine": {"$ref": "x"}}, opaque=is_ref)
    assert issues == [InputIssue(
        ("engine",), "imageGen: 'engine' is only known at run time; input passed through unchecked",
        None, Severity.WARNING, IssueKind.RUN_TIME_VARIANT, "engine", IMAGE_ENGINES)]


def test_unknown_type_and_engine_are_errors_with_what_is_known() -> None:
    """Promise: an unknown name is an error, and says as data what would have been right."""
    issue = one("imagegen", {"engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage",
                             "model": "urn:air:sdxl:checkpoint:civitai:101055@128078",
                             "prompt": "x"})
    assert issue == InputIssue(
        (), "step type 'imagegen' is not in civflow's catalog", "did you mean 'imageGen'?",
        Severity.ERROR, IssueKind.UNKNOWN_TYPE, None, known_types(), "imagegen", ("imageGen",))
    assert issue.is_unknown_name
    assert one("imageGen", {"engine": "hidream", "prompt": "x"}) == InputIssue(
        ("engine",), "imageGen engine 'hidream' is not in civflow's catalog",
        "civflow knows engine " + ", ".join(IMAGE_ENGINES), Severity.ERROR,
        IssueKind.UNKNOWN_VARIANT, "engine", IMAGE_ENGINES, "hidream")
    typo = one("imageGen", {**SDXL, "engine": "sdccp"})
    assert (typo.kind, typo.suggestions, typo.hint) == (
        IssueKind.UNKNOWN_VARIANT, ("sdcpp",), "did you mean 'sdcpp'?")


def test_a_misspelt_name_is_checked_as_if_corrected() -> None:
    """Promise (issue 13): `engine: sdccp` does not hide `widht`; one run shows both."""
    issues = check_input("imageGen", {**SDXL, "engine": "sdccp", "widht": 1024})
    assert [(i.kind, i.path) for i in issues] == [
        (IssueKind.UNKNOWN_VARIANT, ("engine",)), (IssueKind.UNKNOWN_FIELD, ("widht",))]
    typed = check_input("imagegen", {**SDXL, "widht": 1024})
    assert [(i.kind, i.path) for i in typed] == [
        (IssueKind.UNKNOWN_TYPE, ()), (IssueKind.UNKNOWN_FIELD, ("widht",))]
    # Without one close match there is nothing to assume: only the unknown name.
    assert [i.kind for i in check_input("imageGen", {**SDXL, "engine": "hidream",
                                                     "widht": 1024})] == [
        IssueKind.UNKNOWN_VARIANT]


def test_a_misspelt_required_field_is_one_mistake() -> None:
    """Promise: 'mesage' is reported as unknown with a did-you-mean, not also as missing."""
    assert [(i.kind, i.suggestions) for i in check_input("echo", {"mesage": "hi"})] == [
        (IssueKind.UNKNOWN_FIELD, ("message",))]
    ecosystem_typo = check_input("imageGen", {**SDXL, "ecosystem": "sdlx"})
    assert [(i.kind, i.suggestions) for i in ecosystem_typo] == [
        (IssueKind.UNKNOWN_VARIANT, ("sdxl",))]
    ecosystem = one("imageGen", {"engine": "sdcpp", "ecosystem": "hidream"})
    assert (ecosystem.severity, ecosystem.kind) == (Severity.ERROR, IssueKind.UNKNOWN_VARIANT)


def test_every_issue_carries_its_finding_as_data() -> None:
    """Promise: callers place and explain issues from fields, never by parsing messages."""
    body = {k: v for k, v in SDXL.items() if k != "prompt"}
    issues = check_input("imageGen", {**body, "quantity": "2", "negativPrompt": "x"})
    assert [(i.kind, i.path, i.field, i.got, i.suggestions) for i in issues] == [
        (IssueKind.MISSING_FIELD, (), "prompt", None, ()),
        (IssueKind.UNKNOWN_FIELD, ("negativPrompt",), "negativPrompt", "x",
         ("negativePrompt",)),
        (IssueKind.WRONG_TYPE, ("quantity",), "quantity", "2", ()),
    ]
    nested = check_input("convertImage", {"image": "x", "output": {"format": "bmp"}})
    assert [(i.kind, i.path, i.field) for i in nested] == [
        (IssueKind.MISSING_FIELD, ("output",), "hideMetadata"),
        (IssueKind.NOT_ALLOWED, ("output", "format"), "format"),
    ]


def test_unknown_operation_is_an_error_and_missing_engine_too() -> None:
    issue = one("imageGen", {**SDXL, "operation": "createImages"})
    assert issue.severity is Severity.ERROR
    assert issue.hint == "did you mean 'createImage'?"
    assert one("imageGen", {"prompt": "x"}) == InputIssue(
        (), "missing required field 'engine'", "imageGen takes engine " +
        " or ".join(IMAGE_ENGINES), Severity.ERROR, IssueKind.MISSING_FIELD, "engine",
        IMAGE_ENGINES)


def test_messages_are_deterministic() -> None:
    body = {**SDXL, "zeta": 1, "alpha": 2, "sampler": "euler", "steps": 0}
    assert check_input("imageGen", body) == check_input("imageGen", dict(reversed(body.items())))


def test_output_path_error() -> None:
    assert output_path_error("imageGen", SDXL, ("images", 0, "url")) is None
    assert output_path_error("imageUpscaler", {}, ("blob", "url")) is None
    assert output_path_error("videoGen", {}, ("video", "url")) is None
    assert output_path_error("chatCompletion", {}, ("choices", 0, "message", "content")) is None
    assert output_path_error("chatCompletion", {}, ("parsed", "lyrics")) is None
    assert output_path_error("wdTagging", {}, ("tags", "1girl")) is None
    assert output_path_error("imageGen", SDXL, ("imagez", 0)) == \
        "imageGen output has no field 'imagez'; did you mean 'images'?"
    assert output_path_error("imageGen", SDXL, ("images", "url")) == \
        "imageGen output 'images' is a list; use an index like [0], not 'url'"
    assert output_path_error("imageUpscaler", {}, ("blob", 0)) == \
        "imageUpscaler output 'blob' is an object, not a list; index [0] does not apply"
    assert output_path_error("echo", {}, ("message", "x")) == \
        "echo output 'message' is a single value; it has no field 'x'"
    assert output_path_error("imageGen", SDXL, ("images", 0, "zzz")) == (
        "imageGen output 'images[0]' has no field 'zzz'; it has: available, blockedReason, "
        "height, id, jobId, nsfwLevel, previewUrl, previewUrlExpiresAt, tier, type, url, "
        "urlExpiresAt, width")
    assert output_path_error("somethingNew", {}, ("anything",)) is None


def test_optional_output_fields_are_marked() -> None:
    """Promise (trust item 17): a field a step sets only sometimes is known as optional."""
    issue = output_path_issue("promptEnhancement", {}, ("enhancedNegativePrompt",))
    assert issue is not None and not issue.is_error
    assert (issue.kind, issue.at, issue.part) == (OutputIssueKind.OPTIONAL, (),
                                                  "enhancedNegativePrompt")
    assert output_path_issue("promptEnhancement", {}, ("enhancedPrompt",)) is None
    deeper = output_path_issue("videoGen", {}, ("additionalVideos", 0, "url"))
    assert deeper is not None and (deeper.kind, deeper.part) == (OutputIssueKind.OPTIONAL,
                                                                 "additionalVideos")
    # A path that cannot exist at all is that error, optional field or not.
    wrong = output_path_issue("videoGen", {}, ("additionalVideos", 0, "nope"))
    assert wrong is not None and wrong.kind is OutputIssueKind.NO_FIELD
    # output_path_error answers "can it exist": optional fields can.
    assert output_path_error("promptEnhancement", {}, ("enhancedNegativePrompt",)) is None


def test_output_issue_data() -> None:
    issue = output_path_issue("imageGen", SDXL, ("imagez", 0))
    assert issue is not None
    assert (issue.kind, issue.at, issue.part, issue.suggestions) == (
        OutputIssueKind.NO_FIELD, (), "imagez", ("images",))
    assert issue.fields == ("errors", "images")


def test_blob_paths_through_optional_fields() -> None:
    output = {"video": {"id": "v", "url": "u"}, "additionalVideos": [{"id": "w", "url": "u"}]}
    assert blob_paths("videoGen", {}, output) == [("video",), ("additionalVideos", 0)]


def test_blob_paths() -> None:
    output = {"images": [{"id": "a", "url": "u"}, {"id": "b", "available": False}]}
    assert blob_paths("imageGen", SDXL, output) == [("images", 0), ("images", 1)]
    assert blob_paths("imageUpscaler", {}, {"blob": {"id": "x", "url": "u"}}) == [("blob",)]
    assert blob_paths("videoGen", {}, {"video": {"id": "v", "url": "u"}}) == [("video",)]
    assert blob_paths("echo", {}, {"message": "hi"}) == []
    assert blob_paths("newType", {}, {"out": [{"id": "x", "url": "u"}]}) == [("out", 0)]


def test_seed_field() -> None:
    assert seed_field("imageGen", SDXL) == "seed"
    assert seed_field("imageGen", COMFY) == "seed"
    assert seed_field("textToImage", T2I) == "seed"
    assert seed_field("videoGen", {"engine": "wan"}) == "seed"
    assert seed_field("videoGen", {"engine": "kling"}) is None
    assert seed_field("imageUpscaler", {}) is None
    assert seed_field("imageGen", {"engine": "openai"}) is None


def test_resource_airs() -> None:
    body = {**SDXL, "vaeModel": "urn:air:sdxl:vae:civitai:1@2",
            "loras": {"urn:air:sdxl:lora:civitai:3@4": 1.0},
            "embeddings": ["urn:air:sd1:embedding:civitai:7808@9208"],
            "prompt": {"$ref": "x"}}
    assert resource_airs("imageGen", body) == [
        "urn:air:sdxl:checkpoint:civitai:101055@128078", "urn:air:sdxl:vae:civitai:1@2",
        "urn:air:sdxl:lora:civitai:3@4", "urn:air:sd1:embedding:civitai:7808@9208"]
    networks: dict[str, Any] = {"additionalNetworks": {"urn:air:x:lora:civitai:1@1": {}}}
    assert resource_airs("textToImage", networks) == ["urn:air:x:lora:civitai:1@1"]
    assert resource_airs("imageUpscaler", {"model": "urn:air:other:upscaler:civitai:147759@164821",
                                           "image": "https://x/y.png"}) == \
        ["urn:air:other:upscaler:civitai:147759@164821"]
    assert resource_airs("videoGen", {"engine": "wan", "loras": [{"air": "a:b", "strength": 1}]}) \
        == ["a:b"]


@pytest.mark.parametrize(("step_type", "body", "buzz"), [
    ("imageGen", SDXL, 8.0),
    ("imageGen", {**SDXL, "steps": 25, "quantity": 2}, 20.0),
    ("imageGen", {**SDXL, "width": 2048, "height": 1024}, 16.0),
    ("imageGen", COMFY, 8.0),
    ("imageGen", {**COMFY, "steps": 15}, 4.0),
    ("imageGen", {"engine": "sdcpp", "ecosystem": "flux1", "steps": 20, "cfgScale": 1}, 10.0),
    ("imageGen", {"engine": "sdcpp", "ecosystem": "flux1", "operation": "editImage",
                  "steps": 20, "images": ["a", "b"], "quantity": 2}, 120.0),
    ("imageUpscaler", {"image": "x"}, 2.0),
    ("imageUpscaler", {"image": "x", "numberOfRepeats": 3}, 8.0),
    ("videoGen", {"engine": "wan", "resolution": "720p", "duration": 5}, 650.0),
    ("videoGen", {"engine": "wan", "resolution": "1080p", "duration": 10}, 1950.0),
    ("echo", {"message": "x"}, 0.0),
])
def test_estimate_cost(step_type: str, body: dict[str, Any], buzz: float) -> None:
    assert estimate_cost(step_type, body) == pytest.approx(buzz)


@pytest.mark.parametrize(("step_type", "body"), [
    ("somethingNew", {}),
    ("imageGen", {"engine": "openai", "model": "gpt-image-1", "prompt": "x"}),
    ("imageGen", {"engine": "sdcpp", "ecosystem": "qwen", "prompt": "x"}),
    ("videoGen", {"engine": "veo3", "prompt": "x"}),
    ("videoGen", {"engine": "wan", "version": "v2.2", "prompt": "x"}),
    ("transcription", {"mediaUrl": "https://example.com/a.mp3"}),
])
def test_an_unpriced_step_is_never_free(step_type: str, body: dict[str, Any]) -> None:
    """Promise (issue 11): no formula means Unpriced (a LookupError), never 0 Buzz."""
    with pytest.raises(LookupError):
        estimate_cost(step_type, body)
    with pytest.raises(catalog.Unpriced):
        estimate_cost(step_type, body)


def test_upscaler_cost_uses_the_source_size_when_known() -> None:
    assert estimate_cost("imageUpscaler", {"image": "x"}, source_size=(2048, 1536)) == 6.0


def test_cost_ignores_run_time_values() -> None:
    assert estimate_cost("imageGen", {**SDXL, "steps": {"$ref": "x"}}) == 8.0


@pytest.mark.parametrize(("text", "air"), [
    ("urn:air:sdxl:checkpoint:civitai:101055@128078",
     Air("sdxl", "checkpoint", "civitai", "101055", "128078")),
    ("urn:air:sdxl:checkpoint:civitai:827184@2514310+2402203",
     Air("sdxl", "checkpoint", "civitai", "827184", "2514310", 2402203)),
    ("urn:air:sdxl:lora:civitai:123@456+7.safetensors",
     Air("sdxl", "lora", "civitai", "123", "456", 7, "safetensors")),
    ("civitai:101055@128078", Air(None, None, "civitai", "101055", "128078")),
    ("URN:AIR:SDXL:LORA:civitai:1@2", Air("SDXL", "LORA", "civitai", "1", "2")),
    # The service's own quirks, kept on purpose (§11).
    ("urn:air:sdxl:lora:civitai:1@250000.safetensor",
     Air("sdxl", "lora", "civitai", "1", "250000.safetensor")),
    ("urn:air:sd15", Air(None, None, "air", "sd15")),
])
def test_parse_air(text: str, air: Air) -> None:
    assert parse_air(text) == air


def test_parse_air_rejects_and_stringifies() -> None:
    assert parse_air("not an air") is None
    assert parse_air("") is None
    assert str(parse_air("urn:air:sdxl:checkpoint:civitai:827184@2514310+2402203")) == \
        "urn:air:sdxl:checkpoint:civitai:827184@2514310+2402203"


def test_input_variants_are_self_consistent() -> None:
    variants = catalog.input_variants()
    assert len({(v.step_type, tuple(v.discriminators.items())) for v in variants}) == len(variants)
    for variant in variants:
        assert variant.schema["additionalProperties"] is False
        assert check_input(variant.step_type, variant.example) == []
        for name, value in variant.discriminators.items():
            assert variant.example[name] == value


def test_a_number_where_the_api_wants_its_string_says_so() -> None:
    """Issue 15: "'duration' must be one of: 5, 10; got 5" did not say what to write."""
    issues = check_input("videoGen", {"engine": "kling", "prompt": "a cat", "cfgScale": 1,
                                      "duration": 5})
    (issue,) = [i for i in issues if i.path == ("duration",)]
    assert issue.message == ("'duration' must be one of the strings \"5\", \"10\"; "
                             "got the number 5")
    assert issue.hint == 'the API wants the string "5": write duration: "5"'
