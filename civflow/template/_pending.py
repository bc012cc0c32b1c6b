"""Placeholders for values not known yet, and the one exception that means "not known yet".

A `Pending` stands for an upstream output, a foreach item, or the run id while
they are unknown. Reading an attribute or an item of it gives another Pending;
anything that would need the actual value (truth, length, iteration, order,
arithmetic, conversion, calling) raises `NotYetKnown`. Only that exception
makes a render pending: every other error is a real error of the template.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

PENDING_MARK = "<pending: "


class NotYetKnown(Exception):
    """An operation needed the value of a Pending; the render as a whole is pending.

    Deliberately not a TypeError or ValueError: Jinja filters such as `int` swallow
    those and return a default, which would turn "unknown" into a wrong value.
    """

    def __init__(self, ref: str) -> None:
        super().__init__(f"{ref} is not known yet")
        self.ref = ref


class Pending:
    """A value that is not known yet: an upstream output or a foreach item.

    Attribute and index access extend the reference, so `item.url` and
    `steps.hero.output.images[0].url` stay pending with a readable name.
    Equality and hashing stay plain Python (callers compare rendered inputs);
    comparisons inside templates go through the sandbox, which treats them as
    unknown.
    """

    __slots__ = ("ref",)

    def __init__(self, ref: str) -> None:
        self.ref = ref

    def __getattr__(self, name: str) -> Pending:
        if name.startswith("__"):
            raise AttributeError(name)
        return Pending(f"{self.ref}.{name}")

    def __getitem__(self, key: object) -> Pending:
        return Pending(f"{self.ref}[{key!r}]" if isinstance(key, str) else f"{self.ref}[{key}]")

    def _unknown(self, *_args: object, **_kwargs: object) -> NoReturn:
        raise NotYetKnown(self.ref)

    # Without __iter__, iteration would fall back to __getitem__(0, 1, ...) forever.
    def __iter__(self) -> Iterator[Any]:
        self._unknown()

    def __len__(self) -> int:
        self._unknown()

    def __bool__(self) -> bool:
        self._unknown()

    def __contains__(self, item: object) -> bool:
        self._unknown()

    def __int__(self) -> int:
        self._unknown()

    def __float__(self) -> float:
        self._unknown()

    def __index__(self) -> int:
        self._unknown()

    def __call__(self, *args: object, **kwargs: object) -> NoReturn:
        self._unknown()

    def __format__(self, spec: str) -> str:
        if spec:
            self._unknown()
        return str(self)

    __lt__ = __le__ = __gt__ = __ge__ = _unknown
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _unknown
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _unknown
    __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = __pos__ = __abs__ = _unknown

    def __str__(self) -> str:
        return f"{PENDING_MARK}{self.ref}>"

    def __repr__(self) -> str:
        return f"Pending({self.ref!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pending) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)


def is_pending(value: object) -> bool:
    """True for a placeholder, or a string with a placeholder inside it."""
    return isinstance(value, Pending) or (isinstance(value, str) and PENDING_MARK in value)


def holds_pending(value: object, depth: int = 3) -> bool:
    """True if `value` is, or directly holds (a few levels down), a Pending.

    Used to decide whether an error raised by a filter or a function was caused by
    one of its own arguments being unknown; it is not a search of the whole context.
    """
    if isinstance(value, Pending):
        return True
    if depth <= 0 or isinstance(value, str):
        return False
    if isinstance(value, Mapping):
        return any(holds_pending(v, depth - 1) for v in list(value.values())[:100])
    if isinstance(value, list | tuple):
        return any(holds_pending(v, depth - 1) for v in value[:100])
    return False
