"""Key paths into documents (a pipeline's YAML, an API body): one type, one way to write them.

A key path is a tuple of mapping keys and list indexes, `("steps", "hero", "input",
"loras", 0)`, and reads `steps.hero.input.loras[0]`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["KeyPath", "key_text", "nested_deeper_than"]

KeyPath = tuple[str | int, ...]


def key_text(path: KeyPath, *, leading_dot: bool = False) -> str:
    """`("a", 0, "b")` → `a[0].b`; with `leading_dot`, `.a[0].b` (the API's errors keys)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text or leading_dot else str(part)
    return text


_SCALARS = frozenset({str, int, float, bool, type(None)})


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True if lists and mappings in `value` nest more than `limit` levels; iterative, so
    a hostile document cannot exhaust the stack while being measured.

    Level by level, and only containers are carried to the next level: a parsed API
    answer is mostly strings and numbers, and this runs on every one of them."""
    level = [value] if isinstance(value, Mapping | list) else []
    depth = 0
    while level:
        if depth >= limit:
            return True
        deeper: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict or (
                type(item) is not list and isinstance(item, Mapping)) else item
            for child in children:
                kind = type(child)
                if kind is dict or kind is list or (
                        kind not in _SCALARS and isinstance(child, Mapping | list)):
                    deeper.append(child)
        level = deeper
        depth += 1
    return False
