"""The hand-written input schemas of every step variant civflow knows (civitai-api.md §3-§12)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from civflow.catalog._air import AIR_EXAMPLE, AIR_PATTERN

Schema = dict[str, Any]

# -- vocabularies (§12, §6) ------------------------------------------------------------

SDCPP_SAMPLE_METHODS = (
    "euler", "heun", "dpm2", "dpm++2s_a", "dpm++2m", "dpm++2mv2", "ipndm", "ipndm_v",
    "ddim_trailing", "euler_a", "lcm", "res_multistep", "res_2s", "tcd", "er_sde",
)
SDCPP_SCHEDULES = (
    "simple", "discrete", "karras", "exponential", "ays", "bong_tangent", "gits",
    "sgm_uniform", "smoothstep", "kl_optimal", "lcm",
)
COMFY_SAMPLERS = (
    "euler", "euler_ancestral", "euler_cfg_pp", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm",
    "ipndm", "ipndm_v", "deis", "ddim", "uni_pc", "uni_pc_bh2", "res_multistep", "er_sde",
)
COMFY_SCHEDULERS = (
    "normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta",
)
SCHEDULERS = (
    "eulerA", "euler", "lms", "heun", "dpM2", "dpM2A", "dpM2SA", "dpM2M", "dpmsde", "dpmFast",
    "dpmAdaptive", "lmsKarras", "dpM2Karras", "dpM2AKarras", "dpM2SAKarras", "dpM2MKarras",
    "dpmsdeKarras", "ddim", "plms", "uniPC", "undefined", "lcm", "ddpm", "deis", "dpM3MSDE",
)
IMAGE_GEN_OUTPUT_FORMATS = ("jpeg", "png", "webP")
NSFW_LEVELS = ("pg", "pg13", "r", "x", "xxx", "na")

# -- builders ---------------------------------------------------------------------------


def string(*, min_length: int | None = None, max_length: int | None = None,
           nullable: bool = False) -> Schema:
    out: Schema = {"type": ["string", "null"] if nullable else "string"}
    if min_length is not None:
        out["minLength"] = min_length
    if max_length is not None:
        out["maxLength"] = max_length
    return out


def integer(lo: int | None = None, hi: int | None = None, *, default: int | None = None,
            multiple_of: int | None = None, nullable: bool = False) -> Schema:
    out: Schema = {"type": ["integer", "null"] if nullable else "integer"}
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    if multiple_of is not None:
        out["multipleOf"] = multiple_of
    if default is not None:
        out["default"] = default
    return out


def number(lo: float | None = None, hi: float | None = None, *, default: float | None = None,
           nullable: bool = False) -> Schema:
    out: Schema = {"type": ["number", "null"] if nullable else "number"}
    if lo is not None:
        out["minimum"] = lo
    if hi is not None:
        out["maximum"] = hi
    if default is not None:
        out["default"] = default
    return out


def enum(*values: str, default: str | None = None) -> Schema:
    out: Schema = {"enum": list(values)}
    if default is not None:
        out["default"] = default
    return out


def array(items: Schema, *, min_items: int | None = None, max_items: int | None = None) -> Schema:
    out: Schema = {"type": "array", "items": items}
    if min_items is not None:
        out["minItems"] = min_items
    if max_items is not None:
        out["maxItems"] = max_items
    return out


def obj(properties: Mapping[str, Schema], required: tuple[str, ...] = (), *,
        strict: bool = True) -> Schema:
    out: Schema = {"type": "object", "properties": dict(properties)}
    if required:
        out["required"] = list(required)
    if strict:
        out["additionalProperties"] = False
    return out


def const(value: str) -> Schema:
    return {"const": value}


BOOLEAN: Schema = {"type": "boolean"}
AIR: Schema = {"type": "string", "pattern": AIR_PATTERN}
# An image given as a URL, a data URL or base64 text (§6.1, §6.3).
IMAGE: Schema = string()
PROMPT: Schema = string(max_length=10000)
NEGATIVE: Schema = string(max_length=10000, nullable=True)
SEED: Schema = integer(nullable=True)
LORAS: Schema = {"type": "object", "propertyNames": AIR, "additionalProperties": number()}
CONTROL_NETS: Schema = array({"type": "object"})
IMAGE_GEN_BASE: dict[str, Schema] = {
    "outputFormat": enum(*IMAGE_GEN_OUTPUT_FORMATS),
    "imageMetadata": string(nullable=True),
}


@dataclass(frozen=True)
class Variant:
    """One concrete input shape of a step type, selected by its discriminator values."""

    step_type: str
    discriminators: dict[str, str]
    schema: dict[str, Any]
    example: dict[str, Any]
    # Optional fields with plausible values: the agreement test fills them in.
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name this variant: `imageGen (engine sdcpp, ecosystem sdxl)`."""
        shown = [f"{k} {v}" for k, v in self.discriminators.items() if k != "operation"]
        return f"{self.step_type} ({', '.join(shown)})" if shown else self.step_type


def _variant(step_type: str, discriminators: dict[str, str], properties: Mapping[str, Schema],
             required: tuple[str, ...], example: dict[str, Any],
             extras: dict[str, Any] | None = None) -> Variant:
    props = {name: const(value) for name, value in discriminators.items()}
    props.update(properties)
    needed = tuple(discriminators) + tuple(r for r in required if r not in discriminators)
    return Variant(step_type, dict(discriminators), obj(props, needed),
                   {**discriminators, **example}, extras or {})


# -- imageGen (§6.1) ---------------------------------------------------------------------


def _image_gen(engine: str, ecosystem: str) -> list[Variant]:
    """createImage / createVariant (and Flux.1 sdcpp editImage) of one engine+ecosystem."""
    sd1 = ecosystem == "sd1"
    flux = ecosystem == "flux1"
    # Documented ranges (recipes/sdxl.md): SDXL sides 64-2048 and divisible by 16.
    side_hi = 1024 if (sd1 and engine == "comfy") else 2048
    side_default = 512 if sd1 else 1024
    side = integer(64, side_hi, default=side_default,
                   multiple_of=16 if ecosystem == "sdxl" else None)
    props: dict[str, Schema] = {**IMAGE_GEN_BASE, "prompt": PROMPT, "negativePrompt": NEGATIVE,
                                "seed": SEED, "loras": LORAS}
    example: dict[str, Any] = {"prompt": "a lighthouse at dusk"}
    extras: dict[str, Any] = {"negativePrompt": "blurry", "seed": 42, "quantity": 2,
                              "outputFormat": "png",
                              "loras": {"urn:air:sdxl:lora:civitai:123456@789012": 0.8}}
    if engine == "sdcpp":
        props.update(sampleMethod=enum(*SDCPP_SAMPLE_METHODS), schedule=enum(*SDCPP_SCHEDULES))
        extras.update(sampleMethod="dpm++2m", schedule="karras")
    else:
        props.update(sampler=enum(*COMFY_SAMPLERS), scheduler=enum(*COMFY_SCHEDULERS),
                     controlNets=CONTROL_NETS)
        extras.update(sampler="dpmpp_2m", scheduler="karras")

    if flux and engine == "sdcpp":
        # SW requires the three companion models too; DOCS says only diffuserModel (§16).
        props.update(diffuserModel=AIR, vaeModel=AIR, clipLModel=AIR, t5XXLModel=AIR,
                     prompt=string(max_length=1000), negativePrompt=string(nullable=True),
                     width=integer(832, 1216, default=1024),
                     height=integer(832, 1216, default=1024),
                     steps=integer(4, 50, default=28), cfgScale=number(1, 20, default=3.5),
                     quantity=integer(1, 4, default=1))
        required: tuple[str, ...] = ("diffuserModel", "vaeModel", "clipLModel", "t5XXLModel",
                                     "prompt")
        example.update(diffuserModel="urn:air:flux1:diffuser:civitai:618692@691639",
                       vaeModel="urn:air:flux1:vae:civitai:735031@821962",
                       clipLModel="urn:air:flux1:other:civitai:735031@822002",
                       t5XXLModel="urn:air:flux1:other:civitai:735031@822058")
        extras.update(steps=20, cfgScale=1, width=1024, height=832,
                      loras={"urn:air:flux1:lora:civitai:652699@993999": 0.9})
    else:
        props.update(model=AIR, vaeModel={**AIR, "type": ["string", "null"]},
                     steps=integer(1, 150, default=20 if engine == "sdcpp" or flux else 30),
                     cfgScale=number(0, 30, default=3.5 if flux else 7),
                     quantity=integer(1, 12, default=1), width=side, height=side)
        if engine == "sdcpp":
            props.update(embeddings=array(AIR), uCache=enum("off", "normal"))
        if sd1:
            props["clipSkip"] = integer(default=2)
        if flux:
            del props["negativePrompt"]  # Flux.1 on comfy has no negative prompt
            del extras["negativePrompt"]
        required = ("model", "prompt")
        example["model"] = {
            "sdxl": AIR_EXAMPLE, "sd1": "urn:air:sd1:checkpoint:civitai:4384@128713",
            "flux1": "urn:air:flux1:checkpoint:civitai:618692@691639",
        }[ecosystem]
        extras.update(steps=25, cfgScale=7, width=1024 if not sd1 else 512,
                      height=1024 if not sd1 else 768)

    create = _variant("imageGen", {"engine": engine, "ecosystem": ecosystem,
                                   "operation": "createImage"}, props, required, example, extras)
    strength_field = "denoiseStrength" if engine == "comfy" else "strength"
    variant_props = {**props, "image": IMAGE}
    if not (engine == "comfy" and flux):
        variant_props[strength_field] = number(0, 1, default=0.75 if engine == "comfy" else 0.7)
    variant_extras = {**extras, strength_field: 0.5} if strength_field in variant_props else extras
    out = [create, _variant(
        "imageGen", {"engine": engine, "ecosystem": ecosystem, "operation": "createVariant"},
        variant_props, (*required, "image"),
        {**example, "image": "https://example.com/source.png"}, variant_extras)]
    if flux and engine == "sdcpp":
        edit_props = {**props, "images": array(IMAGE, max_items=2)}
        out.append(_variant(
            "imageGen", {"engine": engine, "ecosystem": ecosystem, "operation": "editImage"},
            edit_props, required, example,
            {**extras, "images": ["https://example.com/a.png"]}))
    return out


# -- the other step types -----------------------------------------------------------------


def _text_to_image() -> Variant:
    network = obj({"strength": number(nullable=True), "triggerWord": string(nullable=True),
                   "type": string(nullable=True)})
    props: dict[str, Schema] = {
        "model": AIR, "prompt": string(), "negativePrompt": string(nullable=True),
        "additionalNetworks": {"type": "object", "propertyNames": AIR,
                               "additionalProperties": network},
        "controlNets": CONTROL_NETS, "scheduler": enum(*SCHEDULERS),
        "steps": integer(1, 150, default=30), "cfgScale": number(1, 30, default=7.5),
        "width": integer(64, 4084, default=512), "height": integer(64, 4084, default=512),
        "seed": integer(0, 4294967295), "clipSkip": integer(default=2),
        "quantity": integer(1, 100, default=1), "batchSize": integer(1, 100, default=1),
        "outputFormat": enum("png", "jpeg", "webP"), "engine": string(nullable=True),
        "imageMetadata": string(nullable=True), "sourceImage": string(nullable=True),
        # The field name's misspelling is the API's own (§6.2).
        "sourceImageDenoiseStrenght": number(0, 1, default=0.8),
    }
    return _variant("textToImage", {}, props, ("prompt", "cfgScale", "seed"),
                    {"prompt": "a cat", "cfgScale": 7, "seed": 42},
                    {"model": AIR_EXAMPLE, "scheduler": "dpM2MKarras", "steps": 30,
                     "width": 1024, "height": 1024, "quantity": 1, "batchSize": 2,
                     "negativePrompt": "blurry", "outputFormat": "jpeg",
                     "additionalNetworks": {"urn:air:sdxl:lora:civitai:200000@250000":
                                            {"strength": 0.8}}})


def _convert_image() -> Variant:
    output = {
        "type": "object",
        "properties": {"format": enum("jpeg", "png", "webp", "gif"), "hideMetadata": BOOLEAN,
                       "quality": integer(1, 100, default=85),
                       "lossless": BOOLEAN, "maxFrames": integer(nullable=True)},
        "required": ["format", "hideMetadata"], "additionalProperties": False,
    }
    resize = obj({"type": const("resize"), "targetWidth": integer(1, 4096, nullable=True)},
                 ("type",))
    return _variant("convertImage", {}, {"image": IMAGE, "transforms": array(resize),
                                         "output": output}, ("image", "output"),
                    {"image": "https://example.com/in.png",
                     "output": {"format": "png", "hideMetadata": False}},
                    {"transforms": [{"type": "resize", "targetWidth": 512}]})


def _wan(operation: str) -> Variant:
    props: dict[str, Schema] = {
        "prompt": string(), "negativePrompt": string(nullable=True),
        "sourceImage": string(nullable=True),
        "cfgScale": number(0, 100, default=4), "frameRate": integer(default=24),
        "duration": integer(1, 30, default=5), "seed": SEED, "steps": integer(10, 50, default=20),
        "loras": array(obj({"air": AIR, "strength": number()}, ("air", "strength"))),
        "resolution": enum("720p", "1080p", default="1080p"),
        "enablePromptExpansion": BOOLEAN, "multiShots": BOOLEAN, "enableSafetyChecker": BOOLEAN,
        "audioUrl": string(nullable=True),
    }
    extras: dict[str, Any] = {"resolution": "720p", "duration": 5, "seed": 7,
                              "negativePrompt": "static"}
    if operation == "image-to-video":
        props["images"] = array(IMAGE)
        extras["images"] = ["https://example.com/hero.png"]
    else:
        props["aspectRatio"] = enum("16:9", "9:16", "1:1", "4:3", "3:4", default="16:9")
        extras["aspectRatio"] = "9:16"
    # The API schema marks cfgScale required for Wan although DOCS examples omit it (§6.10);
    # the catalog follows the schema so a body it accepts is one the service accepts.
    return _variant("videoGen", {"engine": "wan", "version": "v2.6", "provider": "fal",
                                 "operation": operation}, props, ("prompt", "cfgScale"),
                    {"prompt": "the camera slowly pushes in", "cfgScale": 4}, extras)


def _kling() -> Variant:
    props: dict[str, Schema] = {
        "prompt": string(), "negativePrompt": string(nullable=True),
        "model": enum("v1", "v1.5", "v1.6", "v2", "v2.5-turbo"),
        "cfgScale": number(0, 1, default=0.5), "mode": enum("standard", "professional"),
        "aspectRatio": enum("16:9", "9:16", "1:1"), "duration": enum("5", "10"),
        "cameraControl": {"type": ["object", "null"]},
        "sourceImage": string(nullable=True), "sourceImageUrl": string(nullable=True),
    }
    return _variant("videoGen", {"engine": "kling"}, props, ("prompt", "cfgScale"),
                    {"prompt": "a paper boat on a river", "cfgScale": 0.5},
                    {"model": "v2", "mode": "professional", "duration": "10",
                     "aspectRatio": "16:9", "sourceImage": "https://example.com/boat.png"})


def _chat_completion() -> Variant:
    part = obj({"type": string(), "text": string(nullable=True),
                "imageUrl": {"type": ["object", "null"]}}, ("type",))
    message = {
        "type": "object",
        "properties": {"role": enum("system", "user", "assistant", "tool"),
                       "content": {"type": ["string", "array", "null"], "items": part},
                       "name": string(nullable=True)},
        "required": ["role"],
    }
    props: dict[str, Schema] = {
        "model": string(min_length=1), "messages": array(message, min_items=1),
        "temperature": number(0, 2, default=1), "topP": number(0, 1, default=1),
        "maxTokens": integer(1, 128000, nullable=True), "n": integer(1, 128, default=1),
        "stop": {"type": ["array", "null"], "items": string()},
        "presencePenalty": number(-2, 2, default=0), "frequencyPenalty": number(-2, 2, default=0),
        "seed": SEED, "user": string(nullable=True),
        "responseFormat": {"type": ["object", "null"]},
    }
    return _variant("chatCompletion", {}, props, ("model", "messages"),
                    {"model": "gpt-4o-mini",
                     "messages": [{"role": "system", "content": "Answer in one line."}]},
                    {"temperature": 0.2, "maxTokens": 200, "seed": 3})


@cache
def all_variants() -> tuple[Variant, ...]:
    """Every variant, built once on first use (keeps `import civflow.catalog` cheap)."""
    variants: list[Variant] = []
    for engine in ("sdcpp", "comfy"):
        for ecosystem in ("sdxl", "sd1", "flux1"):
            variants.extend(_image_gen(engine, ecosystem))
    variants.append(_text_to_image())
    variants.append(_variant(
        "imageUpscaler", {}, {"image": IMAGE, "model": {**AIR, "type": ["string", "null"]},
                              "numberOfRepeats": integer(1, 3, default=1)}, ("image",),
        {"image": "https://example.com/in.png"},
        {"model": "urn:air:other:upscaler:civitai:147759@164821", "numberOfRepeats": 2}))
    variants.append(_convert_image())
    variants.append(_variant(
        "imageBackgroundRemoval", {}, {"image": IMAGE, "format": enum("png", "webp")},
        ("image",), {"image": "https://example.com/in.png"}, {"format": "webp"}))
    variants.extend((_wan("image-to-video"), _wan("text-to-video"), _kling()))
    variants.append(_variant(
        "promptEnhancement", {}, {"ecosystem": string(min_length=1), "prompt": string(min_length=1),
                                  "negativePrompt": string(nullable=True),
                                  "temperature": number(0, 1, nullable=True),
                                  "instruction": string(nullable=True),
                                  "images": {"type": ["array", "null"], "items": IMAGE}},
        ("ecosystem", "prompt"), {"ecosystem": "sdxl", "prompt": "a cat"},
        {"negativePrompt": "blurry", "temperature": 0.5, "instruction": "more detail"}))
    variants.append(_chat_completion())
    variants.append(_variant(
        "wdTagging", {}, {"mediaUrl": string(), "model": string(nullable=True),
                          "threshold": number(0, 1, nullable=True),
                          "prompt": string(nullable=True)},
        ("mediaUrl",), {"mediaUrl": "https://example.com/in.png"},
        {"model": "wd14-vit.v1", "threshold": 0.35}))
    variants.append(_variant("echo", {}, {"message": string()}, ("message",), {"message": "hi"}))
    return tuple(variants)


# Discriminators in the order they select a variant, per step type.
DISCRIMINATOR_ORDER: dict[str, tuple[str, ...]] = {
    "imageGen": ("engine", "ecosystem", "operation"),
    "videoGen": ("engine", "version", "provider", "operation"),
}
# Discriminators whose unknown values are errors rather than pass-through warnings: civflow
# knows every operation of the imageGen ecosystems it covers.
STRICT_DISCRIMINATORS = frozenset({("imageGen", "operation")})
