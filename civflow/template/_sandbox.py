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
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
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

from civflow.template._limits import (
    Budget,
    LimitExceeded,
    Limits,
    check_binop,
    check_percent_format,
    check_replace,
    check_size,
    check_width,
    is_int,
    text_size,
)
from civflow.template._pending import NotYetKnown, Pending, holds_pending

_ACTIVE: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "civflow_template_budget", default=None)


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
        check_binop(self.limits, operator, left, right)
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
            total += text_size(part, self.limits.max_value + 1)
            check_size(self.limits, total)
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
                check_size(self.limits, len(items))
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
            if is_int(width):
                check_size(limits, width)
        elif name == "expandtabs":
            size = _arg(args, kwargs, 0, "tabsize", 8)
            if is_int(size):
                check_size(limits, len(text) + text.count("\t") * max(size, 0))
        elif name == "replace" and len(args) >= 2:
            check_replace(limits, text, args[0], args[1], _arg(args, kwargs, 2, "count", -1))
        elif name == "join" and args:
            items = self._materialize(budget, args[0])
            size = sum(text_size(i, limits.max_value + 1) for i in items)
            check_size(limits, size + len(text) * max(len(items) - 1, 0))
            return (items, *args[1:])
        elif name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((text_size(v, limits.max_value + 1) for v in args[0].values()),
                          default=1)
            check_size(limits, len(text) * max(longest, 1))
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
            check_width(limits, digits)
        if format_spec:
            _raise_if_pending(value)
        text = super().format_field(value, format_spec)  # type: ignore[misc]
        self._total += len(text)
        check_size(limits, self._total)
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
    if is_int(width):
        check_size(env.limits, width)
    return value


def _check_indent(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> Any:
    width = _arg(args, kwargs, 0, "width", 4)
    per_line = width if is_int(width) else len(str(width))
    if isinstance(value, str):
        check_size(env.limits, len(value) + (value.count("\n") + 1) * max(per_line, 0))
    return value


def _check_replace_filter(env: BoundedSandbox, budget: Budget, value: Any,
                          args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if isinstance(value, str):
        check_replace(env.limits, value, _arg(args, kwargs, 0, "old", None),
                       _arg(args, kwargs, 1, "new", None), _arg(args, kwargs, 2, "count", None))
    return value


def _check_join(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
    items = env._materialize(budget, value)
    glue = _arg(args, kwargs, 0, "d", "")
    size = sum(text_size(i, env.limits.max_value + 1) for i in items)
    check_size(env.limits, size + len(str(glue)) * max(len(items) - 1, 0))
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
    if isinstance(value, str) and is_int(width) and width > 0:
        check_size(env.limits, len(value) + (len(value) // width + 1) * len(str(glue)))
    return value


def _check_count(name: str, index: int) -> _Check:
    def check(env: BoundedSandbox, budget: Budget, value: Any, args: tuple[Any, ...],
              kwargs: dict[str, Any]) -> Any:
        count = _arg(args, kwargs, index, name, 0)
        if is_int(count) and count > 0:
            check_size(env.limits, count)
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
