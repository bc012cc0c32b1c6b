"""Offline Buzz estimates, seeds and referenced resources of a step input (§8, §11)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from civflow.catalog._air import parse_air
from civflow.catalog._spec import catalogued

# Fields whose value is one AIR, and fields holding AIRs as object keys or list items.
_AIR_FIELDS = ("model", "diffuserModel", "vaeModel", "clipLModel", "t5XXLModel")
_AIR_KEYED = ("loras", "additionalNetworks")
_AIR_LISTS = ("embeddings",)

# Flat figures for types whose price is not published; assumptions, not facts.
_FLAT = {
    "convertImage": 1.0, "imageBackgroundRemoval": 2.0, "promptEnhancement": 1.0,
    "chatCompletion": 2.0, "wdTagging": 1.0, "echo": 0.0,
}
# Wan 2.6 on fal, Buzz per second of video (§8).
_WAN_PER_SECOND = {"720p": 130.0, "1080p": 195.0}
# Kling is not published: assumed per second, doubled in professional mode.
_KLING_PER_SECOND = 20.0


def _num(input: Mapping[str, object], name: str, default: float) -> float:
    value = input.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default  # absent, or a run-time value not known yet
    return float(value)


class Unpriced(LookupError):
    """civflow knows no formula for this step type or engine: only `whatif` can price it."""


_PRICED_IMAGE_ENGINES = ("sdcpp", "comfy")
_PRICED_IMAGE_ECOSYSTEMS = ("sdxl", "sd1", "flux1")
_PRICED_VIDEO_ENGINES = ("wan", "kling")


def estimate_cost(step_type: str, input: Mapping[str, object], *,
                  source_size: tuple[int, int] | None = None) -> float:
    """Buzz for one step, from the published formulas; `source_size` is an input image's size.

    Raises `Unpriced` (a LookupError) for a type, engine or ecosystem without a known
    formula: such a step is priced at run time, never counted as free.
    """
    engine, ecosystem = input.get("engine"), input.get("ecosystem")
    quantity = _num(input, "quantity", 1)
    if step_type == "imageGen" and (engine not in _PRICED_IMAGE_ENGINES
                                    or ecosystem not in _PRICED_IMAGE_ECOSYSTEMS):
        raise Unpriced(f"no formula for imageGen engine {engine!r}, ecosystem {ecosystem!r}")
    if step_type == "videoGen" and (engine not in _PRICED_VIDEO_ENGINES or (
            engine == "wan" and input.get("version", "v2.6") != "v2.6")):
        raise Unpriced(f"no formula for videoGen engine {engine!r}")
    if step_type in ("imageGen", "textToImage"):
        model = str(input.get("model"))
        if ecosystem == "flux1" or (step_type == "textToImage" and ":flux1:" in model):
            # Flux.1: 0.5 × steps × (editImages+1) × (cfg==1 ? 1 : 2) × quantity; comfy and
            # textToImage are assumed to cost the same as sdcpp.
            images = input.get("images")
            edits = len(images) if isinstance(images, list) else 0
            cfg = _num(input, "cfgScale", 3.5)
            return 0.5 * _num(input, "steps", 28) * (edits + 1) * (1 if cfg == 1 else 2) * quantity
        side = 512 if (ecosystem == "sd1" or step_type == "textToImage") else 1024
        megapixels = _num(input, "width", side) * _num(input, "height", side) / 1024**2
        ref = 20 if engine == "sdcpp" else 30
        default_steps = 20 if engine == "sdcpp" else 30
        batch = _num(input, "batchSize", 1) if step_type == "textToImage" else 1
        # SDXL: 8 × MP × steps/ref × quantity; SD1 and textToImage use the same formula.
        return 8 * megapixels * _num(input, "steps", default_steps) / ref * quantity * batch
    if step_type == "imageUpscaler":
        width, height = source_size or (1024, 1024)  # unknown source: assume 1 MP
        megapixels = width * height / 1024**2
        return max(1, math.ceil(megapixels)) * 2 ** _num(input, "numberOfRepeats", 1)
    if step_type == "videoGen":
        # Kling writes its duration as the strings "5" / "10".
        duration = input.get("duration", 5)
        seconds = float(duration) if isinstance(duration, int | float | str) and \
            str(duration).isdigit() else 5.0
        if engine == "wan":
            resolution = input.get("resolution", "1080p")
            return _WAN_PER_SECOND.get(str(resolution), _WAN_PER_SECOND["1080p"]) * seconds
        mode = 2 if input.get("mode") == "professional" else 1
        return _KLING_PER_SECOND * seconds * mode
    if step_type in _FLAT:
        return _FLAT[step_type]
    raise Unpriced(f"no formula for step type {step_type!r}")


def seed_field(step_type: str, input: Mapping[str, object]) -> str | None:
    """The input field holding the random seed, for types/engines that take one."""
    engine = input.get("engine")
    if step_type == "imageGen" and engine in ("sdcpp", "comfy"):
        return "seed"
    if step_type == "textToImage" or (step_type == "videoGen" and engine == "wan"):
        return "seed"
    if step_type == "chatCompletion":
        return "seed"
    if step_type == "imageGen" or (step_type == "videoGen" and engine != "kling"):
        # Engines described only by the OpenAPI document: those whose variant has a seed.
        for variant in catalogued():
            if variant.step_type == step_type and "seed" in variant.schema.get(
                    "properties", {}) and all(input.get(k) == v
                                              for k, v in variant.discriminators.items()):
                return "seed"
    return None


def resource_airs(step_type: str, input: Mapping[str, object]) -> list[str]:
    """Every model/LoRA/VAE/embedding AIR named in `input`, in order, once each."""
    del step_type  # the same field names carry AIRs in every catalogued type
    found: list[str] = []

    def add(value: object) -> None:
        if isinstance(value, str) and parse_air(value) is not None and value not in found:
            found.append(value)

    for name in _AIR_FIELDS:
        add(input.get(name))
    for name in _AIR_KEYED:
        value = input.get(name)
        if isinstance(value, Mapping):
            for key in value:
                add(key)
        elif isinstance(value, list):  # videoGen loras and old-style lists: [{air, strength}]
            for item in value:
                if isinstance(item, Mapping):
                    add(item.get("air"))
    for name in _AIR_LISTS:
        value = input.get(name)
        if isinstance(value, list):
            for item in value:
                add(item)
    return found
