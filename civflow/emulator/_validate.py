"""Submit-time validation: the template's own rules here, step inputs via the catalog.

Unknown top-level members (the SEED's `callbackUrl`, `detailed`) are ignored, because
the real service deserializes with System.Text.Json, which skips unknown members by
default; unknown members *inside* a step input are the catalog's call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from civflow.emulator._model import Step, iter_refs, timespan_seconds

_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_CURRENCIES = frozenset({"yellow", "blue", "green", "fakeRed"})
_PRIORITIES = frozenset({"high", "normal", "low"})
_NSFW = frozenset({"pg", "pg13", "r", "x", "xxx", "na"})
_UPGRADE = frozenset({"manual", "automatic"})
_EVENT_SCOPES = ("workflow", "step", "job")
_EVENTS = frozenset(
    f"{scope}:{event}" for scope in _EVENT_SCOPES
    for event in ("*", "unassigned", "processing", "succeeded", "failed", "expired", "canceled")
)


@dataclass
class Checked:
    """A template that passed: the echoed fields and the runtime steps."""

    body: dict[str, Any]
    steps: list[Step]
    errors: dict[str, list[str]] = field(default_factory=dict)


def _add(errors: dict[str, list[str]], key: str, message: str) -> None:
    errors.setdefault(key, []).append(message)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optional_object(errors: dict[str, list[str]], body: dict[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, dict):
        _add(errors, key, f"The JSON value for '{key}' must be an object.")


def check_template(body: object) -> Checked:
    """Validate a WorkflowTemplate; `errors` is the ValidationProblemDetails map."""
    errors: dict[str, list[str]] = {}
    if not isinstance(body, dict):
        message = "The JSON value could not be converted to WorkflowTemplate."
        return Checked({}, [], {"$": [message]})
    for key in ("metadata", "arguments"):
        _optional_object(errors, body, key)
    _check_tags(errors, body.get("tags"))
    external = body.get("externalId")
    if external is not None and (not isinstance(external, str)
                                 or not _EXTERNAL_ID.match(external)):
        _add(errors, "externalId", "The field ExternalId must match the regular expression "
             "'^[A-Za-z0-9_-]+$' and be 1 to 128 characters long.")
    currencies = body.get("currencies")
    if currencies is not None and (not isinstance(currencies, list) or any(
            c not in _CURRENCIES for c in currencies)):
        _add(errors, "currencies", "Currencies must be a list of yellow, blue, green, fakeRed.")
    _enum(errors, body, "upgradeMode", _UPGRADE)
    _enum(errors, body, "nsfwLevel", _NSFW)
    for key in ("experimental", "allowMatureContent", "ephemeral"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            _add(errors, key, f"The JSON value for '{key}' must be a boolean.")
    _check_tips(errors, body.get("tips"))
    _check_callbacks(errors, body.get("callbacks"))
    steps = _check_steps(errors, body.get("steps"), body)
    echoed = {k: body.get(k) for k in (
        "tags", "metadata", "arguments", "callbacks", "tips", "currencies", "upgradeMode",
        "nsfwLevel", "experimental", "allowMatureContent", "ephemeral", "externalId")}
    return Checked(echoed, steps, errors)


def _enum(errors: dict[str, list[str]], body: dict[str, Any], key: str,
          allowed: frozenset[str]) -> None:
    if body.get(key) is not None and body[key] not in allowed:
        _add(errors, key, f"The value '{body[key]}' is not valid for {key}.")


def _check_tags(errors: dict[str, list[str]], tags: object) -> None:
    if tags is None:
        return
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        _add(errors, "tags", "Tags must be a list of strings.")
        return
    if len(tags) > 10:
        _add(errors, "tags", "At most 10 tags can be assigned to a workflow.")
    if len(set(tags)) != len(tags):
        _add(errors, "tags", "Tags must be unique.")
    if any(len(t) > 200 for t in tags):
        _add(errors, "tags", "Each tag can be at most 200 characters long.")


def _check_tips(errors: dict[str, list[str]], tips: object) -> None:
    if tips is None:
        return
    if not isinstance(tips, dict):
        _add(errors, "tips", "Tips must be an object with civitai and creators rates.")
        return
    for key in ("civitai", "creators"):
        value = tips.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
            _add(errors, f"tips.{key}", f"The field {key} must be a number between 0 and 2.")


def _check_callbacks(errors: dict[str, list[str]], callbacks: object) -> None:
    if callbacks is None:
        return
    if not isinstance(callbacks, list):
        _add(errors, "callbacks", "Callbacks must be a list.")
        return
    for index, callback in enumerate(callbacks):
        key = f"callbacks[{index}]"
        if not isinstance(callback, dict) or not isinstance(callback.get("url"), str):
            _add(errors, f"{key}.url", "The Url field is required.")
            continue
        events = callback.get("type")
        if not isinstance(events, list) or any(e not in _EVENTS for e in events):
            _add(errors, f"{key}.type", "Type must list known callback event types.")


def _check_steps(errors: dict[str, list[str]], raw: object, body: dict[str, Any]) -> list[Step]:
    if not isinstance(raw, list) or not raw:
        _add(errors, "steps", "The field Steps must be a non-empty array.")
        return []
    steps: list[Step] = []
    names: dict[str, int] = {}
    for index, item in enumerate(raw):
        key = f"steps[{index}]"
        if not isinstance(item, dict):
            _add(errors, key, "A step must be an object.")
            continue
        step_type = item.get("$type")
        if not isinstance(step_type, str):
            _add(errors, f"{key}.$type", "The $type field is required.")
            continue
        name = item.get("name")
        if name is not None and not isinstance(name, str):
            _add(errors, f"{key}.name", "The name must be a string.")
            name = None
        name = name or f"${index}"
        if name in names:
            _add(errors, f"{key}.name", f"The step name '{name}' is used twice.")
        names[name] = index
        if item.get("priority") is not None and item["priority"] not in _PRIORITIES:
            _add(errors, f"{key}.priority", f"The value '{item['priority']}' is not valid "
                 "for priority.")
        timeout = item.get("timeout")
        if timeout is not None and (not isinstance(timeout, str)
                                    or timespan_seconds(timeout) is None):
            _add(errors, f"{key}.timeout", "The timeout must be a TimeSpan like '00:10:00'.")
        retries = item.get("retries")
        if retries is not None and (not _is_int(retries) or retries < 0):
            _add(errors, f"{key}.retries", "Retries must be a non-negative integer.")
        metadata = item.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            _add(errors, f"{key}.metadata", "The metadata must be an object.")
        data = item.get("input")
        if not isinstance(data, dict):
            _add(errors, f"{key}.input", "The Input field is required.")
            continue
        steps.append(Step(index=index, name=name, type=step_type, input=data,
                          priority=item.get("priority") or "normal",
                          timeout=timeout if isinstance(timeout, str) else None,
                          retries=retries if _is_int(retries) else None,
                          metadata=metadata if isinstance(metadata, dict) else {}))
    _link(errors, steps, names, body)
    return steps


def _link(errors: dict[str, list[str]], steps: list[Step], names: dict[str, int],
          body: dict[str, Any]) -> None:
    """Turn `$ref`s into dependency edges; unknown sources and cycles are 400s."""
    by_index = {step.index: step for step in steps}
    for step in steps:
        for path, ref in iter_refs(step.input):
            source = ref["$ref"]
            key = f"steps[{step.index}].input.{path}"
            if source == "$arguments":
                if not isinstance(body.get("arguments"), dict):
                    _add(errors, key, "'$arguments' is referenced but no arguments were given.")
                continue
            target = names.get(source)
            if target is None and source.startswith("$") and source[1:].isdigit():
                target = int(source[1:]) if int(source[1:]) in by_index else None
            if target is None or target not in by_index:
                _add(errors, key, f"The reference '{source}' names no step of this workflow.")
            elif target == step.index:
                _add(errors, key, "A step cannot reference itself.")
            else:
                step.deps.add(by_index[target].name)
            if "path" in ref and not isinstance(ref["path"], str):
                _add(errors, key, "The path of a reference must be a string.")
    if not errors:
        _check_cycles(errors, steps)


def _check_cycles(errors: dict[str, list[str]], steps: list[Step]) -> None:
    by_name = {step.name: step for step in steps}
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> bool:
        if state.get(name) == 2:
            return False
        if state.get(name) == 1:
            cycle = " -> ".join([*trail[trail.index(name):], name])
            _add(errors, "steps", f"The steps reference each other in a cycle: {cycle}.")
            return True
        state[name] = 1
        for dep in sorted(by_name[name].deps):
            if visit(dep, [*trail, name]):
                return True
        state[name] = 2
        return False

    for step in steps:
        if visit(step.name, []):
            return
