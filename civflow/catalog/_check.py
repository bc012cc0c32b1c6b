"""Validation of one step input against the catalog, with pointed messages and hints."""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cache
from typing import TYPE_CHECKING, Any

from civflow.catalog._air import AIR_EXAMPLE
from civflow.catalog._schemas import (
    SDCPP_SAMPLE_METHODS,
    STRICT_DISCRIMINATORS,
    Variant,
)
from civflow.catalog._spec import catalogued as all_variants
from civflow.errors import Severity

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

Path = tuple[str | int, ...]
# Deeper than any discriminator chain of the document (engine → … → operation is four).
_MAX_DEPTH = 8
# How close a misspelt engine, ecosystem or operation must be to a known one to be taken for it.
_NAME_CUTOFF = 0.75


class IssueKind(Enum):
    """What sort of finding an InputIssue is, so callers never parse its message."""

    UNKNOWN_TYPE = "unknown-type"  # the step type is not in the catalog
    UNKNOWN_VARIANT = "unknown-variant"  # an engine, ecosystem, operation... it does not know
    RUN_TIME_VARIANT = "run-time-variant"  # a discriminator only known at run time
    NOT_AN_OBJECT = "not-an-object"  # the input as a whole is not a mapping
    MISSING_FIELD = "missing-field"  # `field` is missing from the object at `path`
    UNKNOWN_FIELD = "unknown-field"  # `path` ends with a key the variant does not take
    WRONG_TYPE = "wrong-type"
    NOT_ALLOWED = "not-allowed"  # not one of the allowed values (enum, const)
    OUT_OF_RANGE = "out-of-range"  # minimum, maximum, multipleOf
    BAD_SIZE = "bad-size"  # string length, list length
    BAD_FORMAT = "bad-format"  # an AIR pattern
    OTHER = "other"


@dataclass(frozen=True)
class InputIssue:
    """One finding about a step input: where inside `input`, what, and how to fix it.

    `message` and `hint` are the words; the rest is the same finding as data:
    `path` is where inside the input (the unknown key itself for UNKNOWN_FIELD, the
    object that lacks it for MISSING_FIELD), `field` the key concerned, `expected` the
    values, types or bound allowed, `got` the value found, and `suggestions` the
    close matches the hint offers.
    """

    path: Path
    message: str
    hint: str | None
    severity: Severity
    kind: IssueKind = IssueKind.OTHER
    field: str | None = None
    expected: tuple[str, ...] = ()
    got: object = None
    suggestions: tuple[str, ...] = ()

    @property
    def is_unknown_name(self) -> bool:
        """An unknown step type or discriminator value: a typo, or newer than the catalog."""
        return self.kind in (IssueKind.UNKNOWN_TYPE, IssueKind.UNKNOWN_VARIANT)


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
    spec = variant.schema.get("properties", {}).get(field, {})
    return tuple(str(v) for v in spec.get("enum", ()))


def _did_you_mean(word: object, choices: tuple[str, ...] | list[str], *,
                  cutoff: float = 0.6) -> str | None:
    close = _closest(word, choices, cutoff=cutoff)
    return f"did you mean {close!r}?" if close else None


def _closest(word: object, choices: tuple[str, ...] | list[str], *,
             cutoff: float = 0.6) -> str | None:
    """The choice `word` is most likely a misspelling of, if any."""
    if not isinstance(word, str):
        return None
    folded = {c.casefold(): c for c in choices}
    if word.casefold() in folded and folded[word.casefold()] != word:
        return folded[word.casefold()]
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=cutoff)
    return close[0] if close else None


def _also(word: object, choices: tuple[str, ...] | list[str], *,
          cutoff: float = 0.6) -> tuple[str, ...]:
    close = _closest(word, choices, cutoff=cutoff)
    return (close,) if close else ()


def _fields(variant: Variant) -> tuple[str, ...]:
    return tuple(sorted(variant.schema.get("properties", {})))


# -- variant selection ------------------------------------------------------------------------


@cache
def type_fields(step_type: str) -> frozenset[str]:
    """Every top-level input field some shape of `step_type` takes."""
    return frozenset(name for variant in _variants_of(step_type)
                     for name in variant.schema.get("properties", {}))


@cache
def known_types() -> tuple[str, ...]:
    """Every step type the catalog describes, sorted (asked for every request the
    emulator takes: worked out once)."""
    return tuple(sorted({v.step_type for v in all_variants()}))


def select(step_type: str, input: Mapping[str, object], *,
           opaque: Callable[[object], bool] = lambda v: False) -> Variant | list[InputIssue]:
    """The variant `input` asks for, or the issues that stop civflow from knowing it."""
    candidates = list(_variants_of(step_type))
    if not candidates:
        known = known_types()
        return [InputIssue((), f"step type {step_type!r} is not in civflow's catalog",
                           _did_you_mean(step_type, known), Severity.ERROR,
                           IssueKind.UNKNOWN_TYPE, expected=known, got=step_type,
                           suggestions=_also(step_type, known))]
    chosen: dict[str, str] = {}
    # Discriminators form a tree (engine → ecosystem → operation, engine → version →
    # provider → operation, engine → model …): the next one to read is whatever the
    # variants still in the running name after the values chosen so far.
    for _ in range(_MAX_DEPTH):
        depth = len(chosen)
        done = [v for v in candidates if len(v.discriminators) <= depth]
        names = sorted({list(v.discriminators)[depth] for v in candidates
                        if len(v.discriminators) > depth})
        if done or not names:
            return done[0] if done else candidates[0]
        name = names[0]
        candidates = [v for v in candidates if len(v.discriminators) > depth
                      and list(v.discriminators)[depth] == name]
        options = sorted({v.discriminators[name] for v in candidates})
        value = input.get(name)
        where = f"{step_type} {' '.join(f'{k} {v}' for k, v in chosen.items())}".strip()
        expected = tuple(options)
        if name in input and opaque(value):
            return [InputIssue((name,), f"{where}: {name!r} is only known at run time; "
                                        "input passed through unchecked", None, Severity.WARNING,
                               IssueKind.RUN_TIME_VARIANT, name, expected)]
        if value is None:
            hint = f"{where} takes {name} " + " or ".join(options)
            return [InputIssue((), f"missing required field {name!r}", hint, Severity.ERROR,
                               IssueKind.MISSING_FIELD, name, expected)]
        if not isinstance(value, str):
            return [InputIssue((name,), f"{name!r} must be a string, got {_show(value)}",
                               f"{where} takes {name} " + " or ".join(options), Severity.ERROR,
                               IssueKind.WRONG_TYPE, name, expected, value)]
        if value not in options:
            if name == "engine" and step_type == "imageGen" and value in _ENGINE_MISTAKES:
                return [InputIssue((name,), f"imageGen has no engine {value!r}",
                                   _ENGINE_MISTAKES[str(value)], Severity.ERROR,
                                   IssueKind.NOT_ALLOWED, name, expected, value)]
            # Stricter than for field names: with a dozen engines, a loose match (hidream →
            # seedream) would check the whole input against the wrong variant.
            hint = _did_you_mean(value, options, cutoff=_NAME_CUTOFF) or \
                f"civflow knows {name} " + ", ".join(options)
            if (step_type, name) in STRICT_DISCRIMINATORS:
                # civflow knows every value here: a value outside them is simply wrong.
                return [InputIssue((name,), f"{name!r} of {where} must be one of: "
                                            f"{', '.join(options)}; got {_show(value)}",
                                   hint, Severity.ERROR, IssueKind.NOT_ALLOWED, name, expected,
                                   value, _also(value, options, cutoff=_NAME_CUTOFF))]
            return [InputIssue((name,), f"{where} {name} {_show(value)} is not in civflow's "
                                        "catalog", hint, Severity.ERROR,
                               IssueKind.UNKNOWN_VARIANT, name, expected, value,
                               _also(value, options, cutoff=_NAME_CUTOFF))]
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
def _variants_of(step_type: str) -> tuple[Variant, ...]:
    """The variants of one step type (asked once per instance: looked up once per type)."""
    return tuple(v for v in all_variants() if v.step_type == step_type)


def _position(variant: Variant) -> int:
    """`all_variants().index(variant)` without comparing every variant field by field."""
    return _positions()[id(variant)]


@cache
def _positions() -> dict[int, int]:
    return {id(v): i for i, v in enumerate(all_variants())}


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
        scalar = [v for v in _variants_of(step_type) if v.schema.get("type") != "object"]
        if scalar:  # a type whose input is not an object (imageUpload takes a string)
            return _sorted([i for error in _validator(_position(scalar[0]))
                            .iter_errors(input) for i in _translate(scalar[0], error)])
        return [InputIssue((), f"the input of a {step_type} step must be an object, "
                               f"got {_show(input)}", None, Severity.ERROR,
                           IssueKind.NOT_AN_OBJECT, got=input)]
    chosen = select(step_type, input, opaque=opaque)
    if isinstance(chosen, list):
        return _as_if_corrected(step_type, input, chosen, opaque)
    variant = chosen
    masked = _mask(dict(input), opaque)
    issues: list[InputIssue] = []
    for error in _validator(_position(variant)).iter_errors(masked):
        issues.extend(_translate(variant, error))
    return _sorted(issues)


def _sorted(issues: list[InputIssue]) -> list[InputIssue]:
    # A misspelt required field is one mistake: reported as unknown, with a did-you-mean.
    misspelt = {(i.path[:-1], i.suggestions[0]) for i in issues
                if i.kind is IssueKind.UNKNOWN_FIELD and len(i.suggestions) == 1}
    unique = {(tuple(str(p) for p in i.path), i.message): i for i in issues
              if not (i.kind is IssueKind.MISSING_FIELD and (i.path, i.field) in misspelt)}
    return [unique[k] for k in sorted(unique)]


def _as_if_corrected(step_type: str, input: Mapping[str, object], issues: list[InputIssue],
                     opaque: Callable[[object], bool]) -> list[InputIssue]:
    """A misspelt type or discriminator with one close match, plus what the rest would get.

    The name is most likely a typo of its suggestion, so the input is checked as if it
    were corrected: one run then shows every other mistake too (say `widht` beside
    `engine: sdccp`). Without a single suggestion nothing else can be checked.
    """
    if len(issues) != 1 or len(issues[0].suggestions) != 1:
        return issues
    issue, fix = issues[0], issues[0].suggestions[0]
    if issue.kind is IssueKind.UNKNOWN_TYPE and fix != step_type:
        return _sorted([issue, *check_input(fix, input, opaque=opaque)])
    discriminators = {name for v in all_variants() if v.step_type == step_type
                      for name in v.discriminators}
    if issue.field in discriminators and issue.path == (issue.field,) and \
            issue.kind in (IssueKind.UNKNOWN_VARIANT, IssueKind.NOT_ALLOWED):
        corrected = {**input, issue.field: fix}
        rest = [i for i in check_input(step_type, corrected, opaque=opaque)
                if i.path != (issue.field,)]
        return _sorted([issue, *rest])
    return issues


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
    field = str(path[-1]) if path else None
    # jsonschema types these as "maybe unset"; for an error it yielded they are always set.
    keyword: Any = error.validator
    expected: Any = error.validator_value
    value: Any = error.instance
    schema: Any = error.schema

    def issue(kind: IssueKind, message: str, hint: str | None = None, *,
              wanted: tuple[str, ...] = (), suggestions: tuple[str, ...] = ()
              ) -> list[InputIssue]:
        return [InputIssue(path, message, hint, Severity.ERROR, kind, field, wanted, value,
                           suggestions)]

    if keyword == "required":
        return [InputIssue(path, f"missing required field {r!r}" if not path
                           else f"missing required field {r!r} in {name!r}", None, Severity.ERROR,
                           IssueKind.MISSING_FIELD, str(r))
                for r in expected if isinstance(value, Mapping) and r not in value]
    if keyword == "additionalProperties":
        known = tuple(schema.get("properties", {}))
        out: list[InputIssue] = []
        for key in sorted(k for k in value if k not in known):
            if path:
                message = f"{key!r} is not a field of {name!r} in {variant.label}"
                hint = _did_you_mean(key, known)
            else:
                message = f"{key!r} is not a field of {variant.label}"
                hint = _unknown_field_hint(variant, key, value[key])
            out.append(InputIssue((*path, key), message, hint, Severity.ERROR,
                                  IssueKind.UNKNOWN_FIELD, str(key), tuple(sorted(known)),
                                  value[key], _also(key, known)))
        return out
    if keyword == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_WORDS.get(t, t) for t in types if t != "null")
        hint = None
        if name == "additionalNetworks" and isinstance(value, list):
            wanted = "an object keyed by AIR"
            hint = f"write {_networks_example(value)}"
        elif any(t in ("integer", "number") for t in types) and isinstance(value, str):
            hint = "write the number without quotes or units"
        return issue(IssueKind.WRONG_TYPE, f"{name!r} must be {wanted}, got {_show(value)}", hint,
                     wanted=tuple(types))
    if keyword in ("enum", "const"):
        options = [expected] if keyword == "const" else list(expected)
        shown = tuple(map(str, options))
        if not isinstance(value, str | bool) and str(value) in options:
            # `duration: 5` where the API wants the string "5": say so, not "5; got 5".
            quoted = ", ".join(json.dumps(o) for o in options)
            return issue(IssueKind.WRONG_TYPE,
                         f"{name!r} must be one of the strings {quoted}; got the number "
                         f"{_show(value)}",
                         f"the API wants the string \"{value}\": write {name}: \"{value}\"",
                         wanted=shown)
        return issue(IssueKind.NOT_ALLOWED,
                     f"{name!r} must be one of: {', '.join(shown)}; got {_show(value)}",
                     _enum_hint(variant, field or "", value) if len(path) == 1 else
                     _did_you_mean(value, list(shown)), wanted=shown,
                     suggestions=_also(value, shown))
    bound = (_num(expected),)
    if keyword == "maximum":
        return issue(IssueKind.OUT_OF_RANGE,
                     f"{name!r} must be at most {_num(expected)}, got {_show(value)}", wanted=bound)
    if keyword == "minimum":
        return issue(IssueKind.OUT_OF_RANGE,
                     f"{name!r} must be at least {_num(expected)}, got {_show(value)}",
                     wanted=bound)
    if keyword == "multipleOf":
        low = int(value // expected * expected)
        return issue(IssueKind.OUT_OF_RANGE,
                     f"{name!r} must be divisible by {_num(expected)}, got {_show(value)}",
                     f"use {low} or {low + int(expected)}", wanted=bound,
                     suggestions=(str(low), str(low + int(expected))))
    if keyword == "maxLength":
        return issue(IssueKind.BAD_SIZE,
                     f"{name!r} must be at most {expected} characters, got {len(value)}",
                     wanted=bound)
    if keyword == "minLength":
        return issue(IssueKind.BAD_SIZE, f"{name!r} must not be empty" if expected == 1
                     else f"{name!r} must be at least {expected} characters, got {len(value)}",
                     wanted=bound)
    if keyword == "maxItems":
        return issue(IssueKind.BAD_SIZE,
                     f"{name!r} must have at most {expected} items, got {len(value)}",
                     wanted=bound)
    if keyword == "minItems":
        return issue(IssueKind.BAD_SIZE, f"{name!r} must have at least {expected} item"
                     f"{'s' if expected != 1 else ''}, got {len(value)}", wanted=bound)
    if keyword == "pattern" and "propertyNames" in error.schema_path:
        # jsonschema reports the offending key itself as the instance, at the object's path.
        return issue(IssueKind.BAD_FORMAT, f"key {value!r} of {name!r} is not an AIR",
                     f"an AIR looks like {AIR_EXAMPLE}")
    if keyword == "pattern":
        return issue(IssueKind.BAD_FORMAT, f"{name!r} is not an AIR: {_show(value)}",
                     f"an AIR looks like {AIR_EXAMPLE}")
    return issue(IssueKind.OTHER, f"{name!r}: {error.message}")


def _num(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

