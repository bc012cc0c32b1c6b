"""Validation of one step input against the catalog, with pointed messages and hints."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from civflow.catalog._air import AIR_EXAMPLE
from civflow.catalog._schemas import (
    DISCRIMINATOR_ORDER,
    SDCPP_SAMPLE_METHODS,
    STRICT_DISCRIMINATORS,
    Variant,
    all_variants,
)
from civflow.errors import Severity

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class InputIssue:
    """One finding about a step input: where inside `input`, what, and how to fix it."""

    path: Path
    message: str
    hint: str | None
    severity: Severity


# -- known mistakes (§12, §14) -------------------------------------------------------------

# UI sampler names (the website's) → textToImage Scheduler, comfy sampler+scheduler, and
# sdcpp sampleMethod+schedule. The sdcpp column is civflow's own mapping (§12 says so).
_UI_SAMPLERS: dict[str, tuple[str, tuple[str, str], tuple[str, str]]] = {
    "Euler a": ("eulerA", ("euler_ancestral", "normal"), ("euler_a", "discrete")),
    "Euler": ("euler", ("euler", "normal"), ("euler", "discrete")),
    "LMS": ("lms", ("lms", "normal"), ("euler", "discrete")),
    "Heun": ("heun", ("heun", "normal"), ("heun", "discrete")),
    "DPM2": ("dpM2", ("dpm_2", "normal"), ("dpm2", "discrete")),
    "DPM2 a": ("dpM2A", ("dpm_2_ancestral", "normal"), ("dpm2", "discrete")),
    "DPM++ 2S a": ("dpM2SA", ("dpmpp_2s_ancestral", "normal"), ("dpm++2s_a", "discrete")),
    "DPM++ 2M": ("dpM2M", ("dpmpp_2m", "normal"), ("dpm++2m", "discrete")),
    "DPM++ SDE": ("dpmsde", ("dpmpp_sde", "normal"), ("dpm++2m", "discrete")),
    "DPM fast": ("dpmFast", ("dpm_fast", "normal"), ("euler", "discrete")),
    "DPM adaptive": ("dpmAdaptive", ("dpm_adaptive", "normal"), ("euler", "discrete")),
    "LMS Karras": ("lmsKarras", ("lms", "karras"), ("euler", "karras")),
    "DPM2 Karras": ("dpM2Karras", ("dpm_2", "karras"), ("dpm2", "karras")),
    "DPM2 a Karras": ("dpM2AKarras", ("dpm_2_ancestral", "karras"), ("dpm2", "karras")),
    "DPM++ 2S a Karras": ("dpM2SAKarras", ("dpmpp_2s_ancestral", "karras"),
                          ("dpm++2s_a", "karras")),
    "DPM++ 2M Karras": ("dpM2MKarras", ("dpmpp_2m", "karras"), ("dpm++2m", "karras")),
    "DPM++ SDE Karras": ("dpmsdeKarras", ("dpmpp_sde", "karras"), ("dpm++2m", "karras")),
    "DPM++ 3M SDE": ("dpM3MSDE", ("dpmpp_3m_sde", "normal"), ("dpm++2m", "discrete")),
    "DDIM": ("ddim", ("ddim", "normal"), ("ddim_trailing", "discrete")),
    "PLMS": ("plms", ("euler", "normal"), ("euler", "discrete")),
    "UniPC": ("uniPC", ("uni_pc", "normal"), ("euler", "discrete")),
    "LCM": ("lcm", ("lcm", "normal"), ("lcm", "lcm")),
}
# sdcpp sampleMethod ↔ comfy sampler, for a field written for the other engine.
_SDCPP_TO_COMFY = {
    "euler": "euler", "euler_a": "euler_ancestral", "heun": "heun", "dpm2": "dpm_2",
    "dpm++2s_a": "dpmpp_2s_ancestral", "dpm++2m": "dpmpp_2m", "ipndm": "ipndm",
    "ipndm_v": "ipndm_v", "lcm": "lcm", "res_multistep": "res_multistep", "er_sde": "er_sde",
}
_COMFY_TO_SDCPP = {v: k for k, v in _SDCPP_TO_COMFY.items()}

_ENGINE_MISTAKES = {
    "sdxl": "SDXL runs on engine sdcpp or comfy with ecosystem sdxl",
    "sd1": "SD 1.5 runs on engine sdcpp or comfy with ecosystem sd1",
    "sd15": "SD 1.5 runs on engine sdcpp or comfy with ecosystem sd1",
    "flux": "Flux.1 runs on engine sdcpp or comfy with ecosystem flux1 "
            "(engine flux1-kontext edits images)",
    "flux1": "Flux.1 runs on engine sdcpp or comfy with ecosystem flux1 "
             "(engine flux1-kontext edits images)",
}


def _ui(name: object) -> tuple[str, tuple[str, str], tuple[str, str]] | None:
    if not isinstance(name, str):
        return None
    folded = {k.casefold(): v for k, v in _UI_SAMPLERS.items()}
    return folded.get(name.strip().casefold())


def _unknown_field_hint(variant: Variant, key: str, value: object) -> str | None:
    engine = variant.discriminators.get("engine")
    if variant.step_type == "imageGen" and engine == "sdcpp":
        if key == "sampler":
            ui = _ui(value)
            if ui:
                method, schedule = ui[2]
                return ("sdcpp takes sampleMethod and schedule: "
                        f"use sampleMethod: {method} and schedule: {schedule}")
            mapped = _COMFY_TO_SDCPP.get(value) if isinstance(value, str) else None
            if mapped or value in SDCPP_SAMPLE_METHODS:
                return f"sdcpp takes sampleMethod and schedule: use sampleMethod: {mapped or value}"
            return "sdcpp takes sampleMethod and schedule; did you mean 'sampleMethod'?"
        if key == "scheduler":
            return "sdcpp takes sampleMethod and schedule; did you mean 'schedule'?"
    if variant.step_type == "imageGen" and engine == "comfy":
        if key == "sampleMethod":
            mapped = _SDCPP_TO_COMFY.get(value) if isinstance(value, str) else None
            if mapped:
                return f"comfy takes sampler and scheduler: use sampler: {mapped}"
            return "comfy takes sampler and scheduler; did you mean 'sampler'?"
        if key == "schedule":
            return "comfy takes sampler and scheduler; did you mean 'scheduler'?"
    if variant.step_type == "imageGen" and key == "additionalNetworks":
        return f"imageGen takes LoRAs as loras: {{AIR: strength}}, e.g. {_loras_example(value)}"
    if variant.step_type == "imageGen" and key == "negativePrompt":
        return "Flux.1 on comfy takes no negativePrompt; remove it"
    if variant.step_type == "imageGen" and key == "clipSkip":
        return f"{variant.discriminators.get('ecosystem', '')} does not take clipSkip; remove it"
    if variant.step_type == "imageGen" and key == "model" and "diffuserModel" in _fields(variant):
        return ("Flux.1 on sdcpp takes diffuserModel (with vaeModel, clipLModel and "
                "t5XXLModel), not model")
    return _did_you_mean(key, _fields(variant))


def _loras_example(value: object) -> str:
    return "loras: {" + ", ".join(f"{air}: {strength}" for air, strength in _pairs(value)) + "}"


def _pairs(value: object) -> list[tuple[str, object]]:
    """(air, strength) of a LoRA list written the old way: [{air, strength}]."""
    pairs: list[tuple[str, object]] = []
    if isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping) and isinstance(item.get("air"), str):
                pairs.append((item["air"], item.get("strength", 1.0)))
    return pairs or [(AIR_EXAMPLE.replace("checkpoint", "lora"), 0.8)]


def _networks_example(value: object) -> str:
    inner = ", ".join(f"{air}: {{strength: {strength}}}" for air, strength in _pairs(value))
    return f"additionalNetworks: {{{inner}}}"


def _enum_hint(variant: Variant, field: str, value: object) -> str | None:
    ui = _ui(value)
    if ui is not None:
        scheduler, (sampler, comfy_scheduler), (method, schedule) = ui
        if field == "scheduler" and variant.step_type == "textToImage":
            return f"{value!r} is written {scheduler}"
        if field == "sampler":
            return f"{value!r} is sampler: {sampler} with scheduler: {comfy_scheduler}"
        if field == "sampleMethod":
            return f"{value!r} is sampleMethod: {method} with schedule: {schedule}"
    if field == "sampleMethod" and isinstance(value, str) and value in _COMFY_TO_SDCPP:
        return f"{value!r} is a comfy sampler name; sdcpp calls it {_COMFY_TO_SDCPP[value]}"
    if field == "sampler" and isinstance(value, str) and value in _SDCPP_TO_COMFY:
        return f"{value!r} is an sdcpp sampleMethod name; comfy calls it {_SDCPP_TO_COMFY[value]}"
    choices = _enum_values(variant, field)
    return _did_you_mean(value, choices) if isinstance(value, str) else None


def _enum_values(variant: Variant, field: str) -> tuple[str, ...]:
    spec = variant.schema["properties"].get(field, {})
    return tuple(str(v) for v in spec.get("enum", ()))


def _did_you_mean(word: object, choices: tuple[str, ...] | list[str]) -> str | None:
    if not isinstance(word, str):
        return None
    folded = {c.casefold(): c for c in choices}
    if word.casefold() in folded and folded[word.casefold()] != word:
        return f"did you mean {folded[word.casefold()]!r}?"
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _fields(variant: Variant) -> tuple[str, ...]:
    return tuple(sorted(variant.schema["properties"]))


# -- variant selection ------------------------------------------------------------------------


def known_types() -> tuple[str, ...]:
    """Every step type the catalog describes, sorted."""
    return tuple(sorted({v.step_type for v in all_variants()}))


def select(step_type: str, input: Mapping[str, object], *,
           opaque: Callable[[object], bool] = lambda v: False) -> Variant | list[InputIssue]:
    """The variant `input` asks for, or the issues that stop civflow from knowing it."""
    candidates = [v for v in all_variants() if v.step_type == step_type]
    if not candidates:
        hint = _did_you_mean(step_type, known_types())
        return [InputIssue((), f"step type {step_type!r} is not in civflow's catalog; "
                               "passed through unchecked", hint, Severity.WARNING)]
    chosen: dict[str, str] = {}
    for name in DISCRIMINATOR_ORDER.get(step_type, ()):
        options = sorted({v.discriminators[name] for v in candidates if name in v.discriminators})
        if not options:
            continue
        value = input.get(name)
        where = f"{step_type} {' '.join(f'{k} {v}' for k, v in chosen.items())}".strip()
        if name in input and opaque(value):
            return [InputIssue((name,), f"{where}: {name!r} is only known at run time; "
                                        "input passed through unchecked", None, Severity.WARNING)]
        if value is None:
            hint = f"{where} takes {name} " + " or ".join(options)
            return [InputIssue((), f"missing required field {name!r}", hint, Severity.ERROR)]
        if not isinstance(value, str):
            return [InputIssue((name,), f"{name!r} must be a string, got {_show(value)}",
                               f"{where} takes {name} " + " or ".join(options), Severity.ERROR)]
        if value not in options:
            if name == "engine" and step_type == "imageGen" and value in _ENGINE_MISTAKES:
                return [InputIssue((name,), f"imageGen has no engine {value!r}",
                                   _ENGINE_MISTAKES[str(value)], Severity.ERROR)]
            hint = _did_you_mean(value, options) or f"civflow knows {name} " + ", ".join(options)
            if (step_type, name) in STRICT_DISCRIMINATORS:
                return [InputIssue((name,), f"{name!r} of {where} must be one of: "
                                            f"{', '.join(options)}; got {_show(value)}",
                                   hint, Severity.ERROR)]
            return [InputIssue((name,), f"{where} {name} {_show(value)} is not in civflow's "
                                        "catalog; passed through unchecked", hint,
                               Severity.WARNING)]
        chosen[name] = str(value)
        candidates = [v for v in candidates if v.discriminators.get(name) == value]
    return candidates[0]


# -- validation ----------------------------------------------------------------------------------


class _Opaque:
    """Stands in for a value only known at run time; no check applies to it."""

    def __repr__(self) -> str:
        return "<run-time value>"


_OPAQUE = _Opaque()


def _mask(value: object, opaque: Callable[[object], bool]) -> object:
    if opaque(value):
        return _OPAQUE
    if isinstance(value, Mapping):
        return {k: _mask(v, opaque) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v, opaque) for v in value]
    return value


@cache
def _validator(variant_index: int) -> Draft202012Validator:
    from jsonschema import Draft202012Validator  # lazy: keeps `civflow validate` start-up fast

    return Draft202012Validator(all_variants()[variant_index].schema)


def check_input(step_type: str, input: Mapping[str, object], *,
                opaque: Callable[[object], bool] = lambda v: False) -> list[InputIssue]:
    """Validate one step input; see the package docstring for the rules."""
    if opaque(input):
        return []
    if not isinstance(input, Mapping):
        return [InputIssue((), f"the input of a {step_type} step must be an object, "
                               f"got {_show(input)}", None, Severity.ERROR)]
    chosen = select(step_type, input, opaque=opaque)
    if isinstance(chosen, list):
        return chosen
    variant = chosen
    masked = _mask(dict(input), opaque)
    issues: list[InputIssue] = []
    for error in _validator(all_variants().index(variant)).iter_errors(masked):
        issues.extend(_translate(variant, error))
    unique = {(tuple(str(p) for p in i.path), i.message): i for i in issues}
    return [unique[k] for k in sorted(unique)]


def _display(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


_TYPE_WORDS = {"string": "a string", "integer": "an integer", "number": "a number",
               "object": "an object", "array": "a list", "boolean": "true or false",
               "null": "null"}


def _translate(variant: Variant, error: ValidationError) -> list[InputIssue]:
    if error.instance is _OPAQUE:
        return []
    path: Path = tuple(error.absolute_path)
    name = _display(path) or "input"
    # jsonschema types these as "maybe unset"; for an error it yielded they are always set.
    keyword: Any = error.validator
    expected: Any = error.validator_value
    value: Any = error.instance
    schema: Any = error.schema

    def issue(message: str, hint: str | None = None, at: Path = path) -> list[InputIssue]:
        return [InputIssue(at, message, hint, Severity.ERROR)]

    if keyword == "required":
        return [InputIssue(path, f"missing required field {r!r}" if not path
                           else f"missing required field {r!r} in {name!r}", None, Severity.ERROR)
                for r in expected if isinstance(value, Mapping) and r not in value]
    if keyword == "additionalProperties":
        known = tuple(schema.get("properties", {}))
        out: list[InputIssue] = []
        for key in sorted(k for k in value if k not in known):
            if path:
                out += issue(f"{key!r} is not a field of {name!r} in {variant.label}",
                             _did_you_mean(key, known), (*path, key))
            else:
                out += issue(f"{key!r} is not a field of {variant.label}",
                             _unknown_field_hint(variant, key, value[key]), (key,))
        return out
    if keyword == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in types if t != "null")
        hint = None
        if name == "additionalNetworks" and isinstance(value, list):
            wanted = "an object keyed by AIR"
            hint = f"write {_networks_example(value)}"
        return issue(f"{name!r} must be {wanted}, got {_show(value)}", hint)
    if keyword in ("enum", "const"):
        options = [expected] if keyword == "const" else list(expected)
        field = str(path[-1]) if path else ""
        return issue(f"{name!r} must be one of: {', '.join(map(str, options))}; got {_show(value)}",
                     _enum_hint(variant, field, value) if len(path) == 1 else
                     _did_you_mean(value, [str(o) for o in options]))
    if keyword == "maximum":
        return issue(f"{name!r} must be at most {_num(expected)}, got {_show(value)}")
    if keyword == "minimum":
        return issue(f"{name!r} must be at least {_num(expected)}, got {_show(value)}")
    if keyword == "multipleOf":
        low = int(value // expected * expected)
        return issue(f"{name!r} must be divisible by {_num(expected)}, got {_show(value)}",
                     f"use {low} or {low + int(expected)}")
    if keyword == "maxLength":
        return issue(f"{name!r} must be at most {expected} characters, got {len(value)}")
    if keyword == "minLength":
        return issue(f"{name!r} must not be empty" if expected == 1
                     else f"{name!r} must be at least {expected} characters, got {len(value)}")
    if keyword == "maxItems":
        return issue(f"{name!r} must have at most {expected} items, got {len(value)}")
    if keyword == "minItems":
        return issue(f"{name!r} must have at least {expected} item"
                     f"{'s' if expected != 1 else ''}, got {len(value)}")
    if keyword == "pattern" and "propertyNames" in error.schema_path:
        # jsonschema reports the offending key itself as the instance, at the object's path.
        return issue(f"key {value!r} of {name!r} is not an AIR", f"an AIR looks like {AIR_EXAMPLE}")
    if keyword == "pattern":
        return issue(f"{name!r} is not an AIR: {_show(value)}",
                     f"an AIR looks like {AIR_EXAMPLE}")
    return issue(f"{name!r}: {error.message}")


def _num(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

