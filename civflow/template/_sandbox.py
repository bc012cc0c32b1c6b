"""A Jinja sandbox with budgets, so that no template can hang, exhaust memory or run forever.

Jinja's sandbox keeps templates away from Python internals; this module bounds
what they may compute. The sandbox's own hooks (intercepted binary operators,
`call`, `str.format`) and a few the code generator is taught to emit (loop
iterables, `~`, comparisons, every piece of output) charge a per-render `Budget`
and check its wall-clock deadline. The checks are cooperative: between two hooks
a template can only do one bounded operation, so no signal or thread is needed.
"""

from __future__ import annotations

import contextvars
import operator
import re
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import update_wrapper
from typing import Any, NoReturn, cast

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.runtime import Context, LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import _PassArg, pass_context
from markupsafe import Markup

from civflow.template._pending import NotYetKnown, Pending, holds_pending


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
            _check_size(self.limits, size)
            self.produced += size
            if self.produced > self.limits.max_produced:
                raise LimitExceeded(
                    f"the template created more than {self.limits.max_produced:,} characters "
                    "and items in all", "build smaller values")
        return value


def _too_many_bits(limits: Limits) -> LimitExceeded:
    return LimitExceeded(f"an integer would have more than {limits.max_int_bits:,} bits",
                         f"integers in templates are limited to {limits.max_int_bits:,} bits")


def _check_size(limits: Limits, size: int) -> None:
    if size > limits.max_value:
        raise LimitExceeded(
            f"a value would have {size:,} characters or items "
            f"(at most {limits.max_value:,})",
            "strings and lists built by templates are bounded; repeat or join less")


# The budget of the render running in this thread or task; None outside a render.
_ACTIVE: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "civflow_template_budget", default=None)


def _is_int(value: object) -> bool:
    return isinstance(value, int)  # bool included: True * "a" is "a"


def _is_seq(value: object) -> bool:
    return isinstance(value, str | list | tuple)


def _text_size(value: Any, cap: int, depth: int = 0) -> int:
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
            total += _text_size(item, cap, depth + 1) + 2
            if total > cap:
                break
        return total
    return 64


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def _width_error(limits: Limits) -> LimitExceeded:
    return LimitExceeded(
        f"a format width or precision is over {limits.max_format_width:,}",
        f"widths and precisions in formats are limited to {limits.max_format_width:,}")


def _check_width(limits: Limits, digits: str) -> int:
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
                widest = max(widest, _check_width(limits, part))
    if starred and any(_is_int(v) and abs(v) > limits.max_format_width for v in values):
        raise _width_error(limits)
    if starred:
        widest = limits.max_format_width
    largest = max((_text_size(v, limits.max_value + 1) for v in values), default=0)
    _check_size(limits, len(fmt) + conversions * (largest + widest + 24))


def _check_replace(limits: Limits, text: str, old: Any, new: Any, count: Any) -> None:
    if not isinstance(old, str) or not isinstance(new, str):
        return
    hits = text.count(old) if old else len(text) + 1
    if _is_int(count) and count >= 0:
        hits = min(hits, count)
    _check_size(limits, len(text) + hits * max(len(new) - len(old), 0))


def _check_binop(limits: Limits, op: str, left: Any, right: Any) -> None:
    if op == "**":
        if _is_int(left) and _is_int(right) and right > 0 and abs(left) > 1 \
                and (abs(left).bit_length() - 1) * right + 1 > limits.max_int_bits:
            raise _too_many_bits(limits)
    elif op == "*":
        if _is_seq(left) and _is_int(right):
            _check_size(limits, len(left) * max(right, 0))
        elif _is_seq(right) and _is_int(left):
            _check_size(limits, len(right) * max(left, 0))
        elif _is_int(left) and _is_int(right) \
                and left.bit_length() + right.bit_length() > limits.max_int_bits + 1:
            raise _too_many_bits(limits)
    elif op == "+":
        if _is_seq(left) and _is_seq(right):
            _check_size(limits, len(left) + len(right))
    elif op == "%" and isinstance(left, str):
        check_percent_format(limits, left, right)


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "gteq": operator.ge,
    "lt": operator.lt, "lteq": operator.le,
    "in": lambda a, b: a in b, "notin": lambda a, b: a not in b,
}


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, emitting calls into the sandbox where Jinja has no hook."""

    def visit_Template(self, node: nodes.Template, frame: Frame | None = None) -> None:
        # Every {% for %} iterates `environment.bounded_iter(<iterable>)`, which charges
        # each iteration. Jinja forbids new node types, so this is an ordinary call.
        for loop in node.find_all(nodes.For):
            iterable = loop.iter
            if isinstance(iterable, nodes.Call) and isinstance(
                    iterable.node, nodes.EnvironmentAttribute) \
                    and iterable.node.name == "bounded_iter":
                continue
            loop.iter = nodes.Call(
                nodes.EnvironmentAttribute("bounded_iter", lineno=iterable.lineno),
                [iterable], [], None, None, lineno=iterable.lineno)
        super().visit_Template(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat(context.eval_ctx.autoescape, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # Operands are evaluated before comparing, not lazily as Python's a < b < c.
        self.write("environment.bounded_compare(")
        self.visit(node.expr, frame)
        for operand in node.ops:
            self.write(f", ({operand.op!r}, ")
            self.visit(operand.expr, frame)
            self.write(")")
        self.write(")")

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.bounded_output({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.bounded_output(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")


def _raise_if_pending(*values: Any) -> None:
    for value in values:
        if isinstance(value, Pending):
            raise NotYetKnown(value.ref)


_PASSTHROUGH = (NotYetKnown, LimitExceeded, RecursionError, MemoryError, jinja2.TemplateError)


def _pending_cause(exc: Exception, args: Any, kwargs: Any) -> NoReturn:
    """Re-raise `exc`, as NotYetKnown when an argument of the failed operation is pending."""
    if holds_pending(args) or holds_pending(kwargs):
        raise NotYetKnown(f"a value ({type(exc).__name__}: {exc})") from None
    raise exc


def _arg(args: tuple[Any, ...], kwargs: Mapping[str, Any], index: int, name: str,
         default: Any) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """An immutable Jinja sandbox whose every render is bounded by `Limits`."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, limits: Limits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limits = limits
        self.globals.pop("lipsum", None)  # lorem ipsum of any length; no pipeline needs it
        self.globals["range"] = self._range
        self.filters = {name: self._guard_filter(name, func)
                        for name, func in self.filters.items()}
        self.tests = {name: _guard_test(name, cast(Callable[..., Any], func))
                      for name, func in self.tests.items()}

    # -- the budget of the current render -----------------------------------------

    def budget(self) -> Budget:
        """The budget of the render under way; outside one, a fresh budget per operation."""
        return _ACTIVE.get() or Budget(self.limits)

    @contextmanager
    def metered(self) -> Iterator[Budget]:
        """Run one render under a fresh budget."""
        budget = Budget(self.limits)
        token = _ACTIVE.set(budget)
        try:
            yield budget
        finally:
            _ACTIVE.reset(token)

    # -- hooks the sandbox offers ----------------------------------------------------

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _raise_if_pending(left, right)
        budget = self.budget()
        budget.tick()
        _check_binop(self.limits, operator, left, right)
        return budget.produce(self.binop_table[operator](left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _raise_if_pending(obj)
        budget = self.budget()
        budget.enter_call()
        try:
            if isinstance(obj, LoopContext) and args:  # loop(children) in a recursive for
                args = (self.bounded_iter(args[0]), *args[1:])
            args = self._check_method(budget, obj, args, kwargs)
            try:
                result = super().call(context, obj, *args, **kwargs)
            except _PASSTHROUGH:
                raise
            except Exception as exc:
                if isinstance(obj, Macro | LoopContext):
                    raise  # the error is inside the template's own code
                _pending_cause(exc, args, kwargs)
        finally:
            budget.leave_call()
        return budget.produce(result)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) \
                or value.__name__ not in ("format", "format_map"):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        is_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                mapping = args[0]
                args, kwargs = (), mapping
            formatter: SandboxedFormatter
            if isinstance(text, Markup):
                formatter = _BoundedEscapeFormatter(self, escape=text.escape)
            else:
                formatter = _BoundedFormatter(self)
            return type(text)(formatter.vformat(text, args, kwargs))

        return update_wrapper(wrapper, value)

    def get_template(self, name: str | jinja2.Template, parent: str | None = None,
                     globals: MutableMapping[str, Any] | None = None) -> jinja2.Template:
        self.budget().enter_call()  # an include is a call: it counts, and checks the clock
        self.budget().leave_call()
        return super().get_template(name, parent, globals)

    def select_template(self, names: Iterable[str | jinja2.Template], parent: str | None = None,
                        globals: MutableMapping[str, Any] | None = None) -> jinja2.Template:
        self.budget().enter_call()
        self.budget().leave_call()
        return super().select_template(names, parent, globals)

    # -- hooks the code generator emits ----------------------------------------------

    def bounded_iter(self, iterable: Any) -> Iterator[Any]:
        _raise_if_pending(iterable)
        return self._charged(iter(iterable), self.budget())

    @staticmethod
    def _charged(iterator: Iterator[Any], budget: Budget) -> Iterator[Any]:
        for item in iterator:
            budget.iterate()
            yield item

    def bounded_concat(self, autoescape: bool, parts: tuple[Any, ...]) -> str:
        budget = self.budget()
        budget.tick()
        total = 0
        for part in parts:
            total += _text_size(part, self.limits.max_value + 1)
            _check_size(self.limits, total)
        joined: str = markup_join(parts) if autoescape else str_join(parts)
        return budget.produce(joined)  # type: ignore[no-any-return]

    def bounded_compare(self, left: Any, *ops: tuple[str, Any]) -> Any:
        self.budget().tick()
        result: Any = True
        for op, right in ops:
            _raise_if_pending(left, right)
            result = _COMPARE[op](left, right)
            if not result:
                return result
            left = right
        return result

    def bounded_output(self, text: str) -> str:
        return self.budget().emit(text)

    # -- globals, filters and tests -------------------------------------------------

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        try:
            size = len(numbers)
        except OverflowError:
            size = self.limits.max_range + 1
        if size > self.limits.max_range:
            raise LimitExceeded(f"range() of more than {self.limits.max_range:,} numbers",
                                f"ranges are limited to {self.limits.max_range:,} numbers")
        return numbers

    def _materialize(self, budget: Budget, value: Any) -> list[Any]:
        _raise_if_pending(value)
        if isinstance(value, list):
            return value
        items: list[Any] = []
        for item in value:
            items.append(item)
            if len(items) > self.limits.max_value:
                _check_size(self.limits, len(items))
        budget.produce(items)
        return items

    def _check_method(self, budget: Budget, obj: Any, args: tuple[Any, ...],
                      kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
        """Refuse str methods whose result would be too big; returns the (safe) arguments."""
        text = getattr(obj, "__self__", None)
        if not isinstance(obj, types.BuiltinMethodType) or not isinstance(text, str):
            return args
        limits, name = self.limits, obj.__name__
        if name in ("center", "ljust", "rjust", "zfill"):
            width = _arg(args, kwargs, 0, "width", 0)
            if _is_int(width):
                _check_size(limits, width)
        elif name == "expandtabs":
            size = _arg(args, kwargs, 0, "tabsize", 8)
            if _is_int(size):
                _check_size(limits, len(text) + text.count("\t") * max(size, 0))
        elif name == "replace" and len(args) >= 2:
            _check_replace(limits, text, args[0], args[1], _arg(args, kwargs, 2, "count", -1))
        elif name == "join" and args:
            items = self._materialize(budget, args[0])
            size = sum(_text_size(i, limits.max_value + 1) for i in items)
            _check_size(limits, size + len(text) * max(len(items) - 1, 0))
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((_text_size(v, limits.max_value + 1) for v in args[0].values()),
                          default=1)
            _check_size(limits, len(text) * max(longest, 1))
        return args

    def _guard_filter(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        """`func`, charged to the budget, with its size checks and pending semantics.

        Guarded filters take the context, which also keeps Jinja from running them at
        compile time on constant arguments, outside any budget.
        """
        pass_arg = _PassArg.from_obj(func)
        check = _FILTER_CHECKS.get(name)

        def guarded(context: Context, value: Any, *args: Any, **kwargs: Any) -> Any:
            budget = self.budget()
            budget.enter_call()
            try:
                if check is not None:
                    value = check(self, budget, value, args, kwargs)
                lead: tuple[Any, ...] = ()
                if pass_arg is _PassArg.context:
                    lead = (context,)
                elif pass_arg is _PassArg.eval_context:
                    lead = (context.eval_ctx,)
                elif pass_arg is _PassArg.environment:
                    lead = (context.environment,)
                try:
                    result = func(*lead, value, *args, **kwargs)
                except _PASSTHROUGH:
                    raise
                except Exception as exc:
                    _pending_cause(exc, (value, *args), kwargs)
            finally:
                budget.leave_call()
            return budget.produce(result)

        guarded.__name__ = getattr(func, "__name__", name)
        guarded.__doc__ = func.__doc__
        return pass_context(guarded)


class _BoundedFormatterMixin:
    """Checks each field of `str.format` as it is formatted, before the result is joined."""

    _env: jinja2.Environment
    _total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        limits = cast(BoundedSandbox, self._env).limits
        for digits in re.findall(r"\d+", format_spec):
            _check_width(limits, digits)
        if format_spec:
            _raise_if_pending(value)
        text = super().format_field(value, format_spec)  # type: ignore[misc]
        self._total += len(text)
        _check_size(limits, self._total)
        return text


class _BoundedFormatter(_BoundedFormatterMixin, SandboxedFormatter):
    pass


class _BoundedEscapeFormatter(_BoundedFormatterMixin, SandboxedEscapeFormatter):
    pass


def _guard_test(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A test of a pending value is unknown, except whether it is defined."""
    if name in ("defined", "undefined"):
        return func

    def guarded(*args: Any, **kwargs: Any) -> Any:
        _raise_if_pending(*args, *kwargs.values())
        return func(*args, **kwargs)

    return update_wrapper(guarded, func)  # keeps jinja_pass_arg


# Filters whose result can be far larger than their input: check before running them.
_Check = Callable[[BoundedSandbox, Budget, Any, tuple[Any, ...], dict[str, Any]], Any]


def _check_center(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    width = _arg(args, kwargs, 0, "width", 80)
    if _is_int(width):
        _check_size(env.limits, width)
    return value


def _check_indent(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    per_line = width if _is_int(width) else len(str(width))
    if isinstance(value, str):
        _check_size(env.limits, len(value) + (value.count("\n") + 1) * max(per_line, 0))
    return value


def _check_replace_filter(env: BoundedSandbox, budget: Budget, value: Any,
                          args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if isinstance(value, str):
        _check_replace(env.limits, value, _arg(args, kwargs, 0, "old", None),
                       _arg(args, kwargs, 1, "new", None), _arg(args, kwargs, 2, "count", None))
    return value


def _check_join(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    items = env._materialize(budget, value)
    glue = _arg(args, kwargs, 0, "d", "")
    size = sum(_text_size(i, env.limits.max_value + 1) for i in items)
    _check_size(env.limits, size + len(str(glue)) * max(len(items) - 1, 0))
    return items


def _check_format(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    if isinstance(value, str):
        check_percent_format(env.limits, value, kwargs or args)
    return value


def _check_wordwrap(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    width = _arg(args, kwargs, 0, "width", 79)
    glue = _arg(args, kwargs, 2, "wrapstring", None) or "\n"
    if isinstance(value, str) and _is_int(width) and width > 0:
        _check_size(env.limits, len(value) + (len(value) // width + 1) * len(str(glue)))
    return value


def _check_count(name: str, index: int) -> _Check:
    def check(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
        count = _arg(args, kwargs, index, name, 0)
        if _is_int(count) and count > 0:
            _check_size(env.limits, count)
            budget.iterate(count)  # slice and batch loop that many times
        return value
    return check


_FILTER_CHECKS: dict[str, _Check] = {
    "center": _check_center,
    "indent": _check_indent,
    "replace": _check_replace_filter,
    "join": _check_join,
    "format": _check_format,
    "wordwrap": _check_wordwrap,
    "batch": _check_count("linecount", 0),
    "slice": _check_count("slices", 0),
}
