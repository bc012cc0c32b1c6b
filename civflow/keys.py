"""Key paths into documents (a pipeline's YAML, an API body): one type, one way to write them.

A key path is a tuple of mapping keys and list indexes, `("steps", "hero", "input",
"loras", 0)`, and reads `steps.hero.input.loras[0]`.
"""

from __future__ import annotations

__all__ = ["KeyPath", "key_text"]

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
