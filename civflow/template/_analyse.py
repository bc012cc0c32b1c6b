"""Reading a template's syntax tree: the `steps.<name>` references and free names it uses.

References are found in the syntax tree, never with regular expressions, so a
string that merely looks like `steps.x.output` is not one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import meta, nodes

from civflow.keys import key_text


def is_template(text: str) -> bool:
    """True if `text` holds any Jinja markup at all."""
    return "{{" in text or "{%" in text or "{#" in text


@dataclass(frozen=True, slots=True)
class Reference:
    """`steps.<step>.output<path>` or `steps.<step>.outputs<path>` found in a template."""

    step: str
    kind: str | None  # "output", "outputs", or None for a bare `steps.<step>`
    path: tuple[str | int, ...]  # after output / outputs; stops at the first dynamic part
    line: int

    def __str__(self) -> str:
        head = key_text(("steps", self.step))
        if self.kind is not None:
            head += f".{self.kind}" if self.kind.isidentifier() else f"[{self.kind!r}]"
        return head + (key_text(self.path, leading_dot=True) if self.path else "")


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one template (with its includes) reads."""

    references: tuple[Reference, ...]
    names: frozenset[str]  # undeclared names the template reads
    bad_steps_use: int | None  # line of a use of `steps` that is not steps.<name>
    name_lines: Mapping[str, int] = field(default_factory=dict)  # first line of each name


# Statements that bind names; without them every loaded name is free.
_BINDING = (nodes.For, nodes.Assign, nodes.AssignBlock, nodes.Macro, nodes.CallBlock,
            nodes.With, nodes.Import, nodes.FromImport)


def free_names(tree: nodes.Template) -> set[str]:
    """Names a template reads from its context.

    Jinja's own `meta.find_undeclared_variables` runs the whole code generator, about
    half a millisecond per template; most templates bind nothing, and for them the
    loaded names of the syntax tree are the answer.
    """
    if any(True for _ in tree.find_all(_BINDING)):
        return set(meta.find_undeclared_variables(tree))
    # Like Jinja's answer, the environment's globals (range, dict, ...) are not free.
    known = tree.environment.globals if tree.environment is not None else {}
    return {n.name for n in tree.find_all(nodes.Name)
            if n.ctx == "load" and n.name not in known}


def _chain(node: nodes.Node) -> tuple[nodes.Node, list[str | int | None]]:
    parts: list[str | int | None] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem):
            arg = node.arg
            parts.append(arg.value if isinstance(arg, nodes.Const)
                         and isinstance(arg.value, str | int) else None)
            node = node.node
        else:
            return node, parts[::-1]


def references(tree: nodes.Template) -> tuple[list[Reference], int | None]:
    accesses: list[Any] = list(tree.find_all((nodes.Getattr, nodes.Getitem)))
    inner = {id(a.node) for a in accesses}
    refs: list[Reference] = []
    in_chain: set[int] = set()
    for access in accesses:
        if id(access) in inner:
            continue
        root, parts = _chain(access)
        if not (isinstance(root, nodes.Name) and root.name == "steps"):
            continue
        in_chain.add(id(root))
        if not parts or not isinstance(parts[0], str):
            continue
        step, rest = parts[0], parts[1:]
        kind = rest[0] if rest and isinstance(rest[0], str) else None
        path: list[str | int] = []
        for part in rest[1:]:
            if part is None:
                break
            path.append(part)
        refs.append(Reference(step, kind, tuple(path), access.lineno))
    bad = next((n.lineno for n in tree.find_all(nodes.Name)
                if n.name == "steps" and n.ctx == "load" and id(n) not in in_chain), None)
    return refs, bad


def walk_strings(value: Any) -> Iterator[tuple[tuple[str | int, ...], str, bool]]:
    """Every string in a JSON-like value: (path, text, is_key)."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            yield path, item, False
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                if isinstance(key, str) and is_template(key):
                    yield (*path, key), key, True
                stack.append(((*path, key), inner))
        elif isinstance(item, list):
            stack.extend(((*path, i), inner) for i, inner in enumerate(item))
