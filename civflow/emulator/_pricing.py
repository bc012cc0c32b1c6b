"""Input checks and prices of steps, taken from the catalog so rules live in one place."""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from functools import cache
from typing import Any

from civflow import catalog
from civflow.emulator._model import Step


def _is_ref(value: object) -> bool:
    """A `{"$ref": …}` object: unknown until run time, so the catalog must not judge it."""
    return isinstance(value, dict) and isinstance(value.get("$ref"), str)


def _display(path: catalog.Path) -> str:
    """`("loras", 0, "air")` → `.loras[0].air`, the key style of the real errors map."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)


# How many distinct step inputs keep their check result. A client that prices a batch with
# `whatif` and then submits it sends every input twice; 4,096 covers a few such batches.
_CHECKS_KEPT = 4096


# json.dumps(..., separators=(",", ":"), ensure_ascii=False), its encoder made once.
_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class _CheckCache:
    """Catalog findings per identical (type, input), least recently used evicted first.

    The catalog check is a pure function of the type and the input, and the costliest
    part of a submit; keyed by a digest of the exact JSON so a large input (a data URL)
    is not held twice. Shared by every emulator of the process, hence the lock.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._found: OrderedDict[bytes, list[tuple[str, str]]] = OrderedDict()
        self._lock = threading.Lock()

    def issues(self, step: Step) -> list[tuple[str, str]]:
        """(key suffix after `.input`, message) for each issue, in the catalog's order."""
        text = _compact([step.type, step.input])
        key = hashlib.blake2b(text.encode(), digest_size=20).digest()
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
                return found
        found = [(_display(issue.path), issue.message)
                 for issue in catalog.check_input(step.type, step.input, opaque=_is_ref)]
        with self._lock:
            self._found[key] = found
            while len(self._found) > self._size:
                self._found.popitem(last=False)
        return found


_CHECKS = _CheckCache(_CHECKS_KEPT)


@cache
def _known_types() -> frozenset[str]:
    return frozenset(catalog.known_types())


def check_steps(steps: list[Step]) -> dict[str, list[str]]:
    """The ValidationProblemDetails map for every step input the catalog rejects.

    The catalog reports an unknown `$type` or engine as a warning (civflow may be older
    than the service); the emulator *is* the service, so it answers 400 for those too.
    """
    errors: dict[str, list[str]] = {}
    known = _known_types()
    for step in steps:
        prefix = f"steps[{step.index}]"
        if step.type not in known:
            errors.setdefault(f"{prefix}.$type", []).append(
                f"The step type '{step.type}' is not supported.")
            continue
        for suffix, message in _CHECKS.issues(step):
            # Errors and warnings (unknown engine or ecosystem) both reject, see above.
            errors.setdefault(f"{prefix}.input{suffix}", []).append(message)
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
