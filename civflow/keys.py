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


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True if lists and mappings in `value` nest more than `limit` levels; iterative, so
    a hostile document cannot exhaust the stack while being measured."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping | list):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)
    return False
