"""What one render may spend: the limits, the per-render budget, and size checks.

Every bound a template can hit is here (integer size, string and list sizes, loop
iterations, calls, output, a wall-clock deadline); the sandbox in `_sandbox.py`
calls these checks from Jinja's hooks.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from civflow.template._pending import Pending


@dataclass(frozen=True, slots=True)
class Limits:
    """What one render may compute. The defaults are far above any real pipeline's needs."""

    max_int_bits: int = 4096  # any integer a template computes
    max_value: int = 4 * 2**20  # characters or items of any one string, list or mapping
    max_produced: int = 32 * 2**20  # characters and items all operations create, per render
    max_output: int = 4 * 2**20  # characters all output statements emit, per render
    max_iterations: int = 100_000  # loop iterations, per render
    max_calls: int = 100_000  # calls of functions, macros, filters and includes, per render
    max_call_depth: int = 40  # macros calling macros
    max_range: int = 100_000  # numbers in one range()
    max_format_width: int = 4096  # widths and precisions in % and str.format
    render_seconds: float = 2.0  # wall-clock deadline of one render, the last resort


class LimitExceeded(Exception):
    """A render went over one of its `Limits`."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _seconds(value: float) -> str:
    return f"{value:g} second" + ("" if value == 1 else "s")


class Budget:
    """The running totals of one render, checked against its Limits at every hook."""

    __slots__ = ("calls", "deadline", "depth", "iterations", "limits", "output", "produced")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.render_seconds
        self.iterations = self.calls = self.depth = self.output = self.produced = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(
                f"the template ran longer than {_seconds(self.limits.render_seconds)}",
                "a template must finish quickly; loop over less, or compute outside civflow")

    def iterate(self, count: int = 1) -> None:
        self.iterations += count
        if self.iterations > self.limits.max_iterations:
            raise LimitExceeded(
                f"the template ran more than {self.limits.max_iterations:,} loop iterations",
                "loops in one template share this budget; nested loops multiply")
        self.tick()

    def enter_call(self) -> None:
        self.calls += 1
        self.depth += 1
        if self.calls > self.limits.max_calls:
            raise LimitExceeded(
                f"the template made more than {self.limits.max_calls:,} calls",
                "calls of macros, functions, filters and includes share this budget")
        if self.depth > self.limits.max_call_depth:
            raise LimitExceeded(
                f"calls are nested more than {self.limits.max_call_depth} deep",
                "a macro that calls itself needs a condition that stops it")
        self.tick()

    def leave_call(self) -> None:
        self.depth -= 1

    def emit(self, text: str) -> str:
        self.output += len(text)
        if self.output > self.limits.max_output:
            raise LimitExceeded(
                f"the template wrote more than {self.limits.max_output:,} characters",
                "output, including text captured by set blocks and macros, is bounded")
        self.tick()
        return text

    def produce(self, value: Any) -> Any:
        """Charge a computed value and check its size; return it unchanged."""
        if isinstance(value, int) and not isinstance(value, bool):
            if value.bit_length() > self.limits.max_int_bits:
                raise _too_many_bits(self.limits)
            return value
        if isinstance(value, str | list | tuple | dict | set | frozenset):
            size = len(value)
            check_size(self.limits, size)
            self.produced += size
            if self.produced > self.limits.max_produced:
                raise LimitExceeded(
                    f"the template created more than {self.limits.max_produced:,} characters "
                    "and items in all", "build smaller values")
        return value


def _too_many_bits(limits: Limits) -> LimitExceeded:
    return LimitExceeded(f"an integer would have more than {limits.max_int_bits:,} bits",
                         f"integers in templates are limited to {limits.max_int_bits:,} bits")


def check_size(limits: Limits, size: int) -> None:
    if size > limits.max_value:
        raise LimitExceeded(
            f"a value would have {size:,} characters or items "
            f"(at most {limits.max_value:,})",
            "strings and lists built by templates are bounded; repeat or join less")


# The budget of the render running in this thread or task; None outside a render.
def is_int(value: object) -> bool:
    return isinstance(value, int)  # bool included: True * "a" is "a"


def _is_seq(value: object) -> bool:
    return isinstance(value, str | list | tuple)


def text_size(value: Any, cap: int, depth: int = 0) -> int:
    """About how many characters `str(value)` has, without building it; stops past `cap`."""
    if isinstance(value, str):
        return len(value)
    if value is None or isinstance(value, bool | float):
        return 24
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, Pending):
        return len(str(value))
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        if depth > 8:
            return 64 * len(value)
        items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
        total = 2
        for item in items:
            total += text_size(item, cap, depth + 1) + 2
            if total > cap:
                break
        return total
    return 64


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def _width_error(limits: Limits) -> LimitExceeded:
    return LimitExceeded(
        f"a format width or precision is over {limits.max_format_width:,}",
        f"widths and precisions in formats are limited to {limits.max_format_width:,}")


def check_width(limits: Limits, digits: str) -> int:
    if len(digits) > 9 or int(digits) > limits.max_format_width:
        raise _width_error(limits)
    return int(digits)


def check_percent_format(limits: Limits, fmt: str, args: Any) -> None:
    """Refuse `fmt % args` when its result could exceed the value limit."""
    values = list(args.values()) if isinstance(args, Mapping) else (
        list(args) if isinstance(args, tuple) else [args])
    conversions = widest = 0
    starred = False
    for match in _PERCENT.finditer(fmt):
        if match.group(3) == "%":
            continue
        conversions += 1
        for part in match.group(1, 2):
            if part == "*":
                starred = True
            elif part is not None:
                widest = max(widest, check_width(limits, part))
    if starred and any(is_int(v) and abs(v) > limits.max_format_width for v in values):
        raise _width_error(limits)
    if starred:
        widest = limits.max_format_width
    largest = max((text_size(v, limits.max_value + 1) for v in values), default=0)
    check_size(limits, len(fmt) + conversions * (largest + widest + 24))


def check_replace(limits: Limits, text: str, old: Any, new: Any, count: Any) -> None:
    if not isinstance(old, str) or not isinstance(new, str):
        return
    hits = text.count(old) if old else len(text) + 1
    if is_int(count) and count >= 0:
        hits = min(hits, count)
    check_size(limits, len(text) + hits * max(len(new) - len(old), 0))


def check_binop(limits: Limits, op: str, left: Any, right: Any) -> None:
    if op == "**":
        if is_int(left) and is_int(right) and right > 0 and abs(left) > 1 \
                and (abs(left).bit_length() - 1) * right + 1 > limits.max_int_bits:
            raise _too_many_bits(limits)
    elif op == "*":
        if _is_seq(left) and is_int(right):
            check_size(limits, len(left) * max(right, 0))
        elif _is_seq(right) and is_int(left):
            check_size(limits, len(right) * max(left, 0))
        elif is_int(left) and is_int(right) \
                and left.bit_length() + right.bit_length() > limits.max_int_bits + 1:
            raise _too_many_bits(limits)
    elif op == "+":
        if _is_seq(left) and _is_seq(right):
            check_size(limits, len(left) + len(right))
    elif op == "%" and isinstance(left, str):
        check_percent_format(limits, left, right)
