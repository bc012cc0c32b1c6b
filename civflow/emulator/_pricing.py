"""Input checks and prices of steps, taken from the catalog so rules live in one place."""

from __future__ import annotations

import math
from typing import Any

from civflow import catalog
from civflow.emulator._model import Step


def _is_ref(value: object) -> bool:
    """A `{"$ref": …}` object: unknown until run time, so the catalog must not judge it."""
    return isinstance(value, dict) and isinstance(value.get("$ref"), str)


def _display(path: catalog.Path) -> str:
    """`("loras", 0, "air")` → `.loras[0].air`, the key style of the real errors map."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


def check_steps(steps: list[Step]) -> dict[str, list[str]]:
    """The ValidationProblemDetails map for every step input the catalog rejects.

    The catalog reports an unknown `$type` or engine as a warning (civflow may be older
    than the service); the emulator *is* the service, so it answers 400 for those too.
    """
    errors: dict[str, list[str]] = {}
    known = set(catalog.known_types())
    for step in steps:
        prefix = f"steps[{step.index}]"
        if step.type not in known:
            errors.setdefault(f"{prefix}.$type", []).append(
                f"The step type '{step.type}' is not supported.")
            continue
        for issue in catalog.check_input(step.type, step.input, opaque=_is_ref):
            # Errors and warnings (unknown engine or ecosystem) both reject, see above.
            key = f"{prefix}.input{_display(issue.path)}"
            errors.setdefault(key, []).append(issue.message)
    return errors


# What the emulator charges for a step civflow has no formula for (the service prices
# every step; this figure is the emulator's own assumption, not a published price).
UNPRICED_BUZZ = 10.0


def _step_price(step: Step) -> float:
    try:
        return catalog.estimate_cost(step.type, step.input)
    except LookupError:
        return UNPRICED_BUZZ


def price(steps: list[Step], tips: dict[str, Any] | None) -> dict[str, Any]:
    """WorkflowCost: Buzz from the published formulas, whole numbers as on the wire."""
    each = [_step_price(step) for step in steps]
    base = math.ceil(sum(each) - 1e-9)
    rates = tips or {}
    tip_civitai = math.ceil(base * float(rates.get("civitai") or 0))
    tip_creators = math.ceil(base * float(rates.get("creators") or 0))
    return {"base": base,
            "factors": {"steps": float(len(steps))},
            "tips": {"civitai": tip_civitai, "creators": tip_creators},
            "total": base + tip_civitai + tip_creators}


def step_prices(steps: list[Step]) -> list[float]:
    """Each step's own share before rounding (the API reports it only in detailed
    webhooks; the emulator's counters keep it per step)."""
    return [_step_price(step) for step in steps]
