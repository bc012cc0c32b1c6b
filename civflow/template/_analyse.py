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


# The `kind` of a reference that selects an instance by its matrix values,
# `steps.shot[{"product": "mug"}]`: never an instance key (keys have no brackets).
SELECT_KIND = "[matrix]"


@dataclass(frozen=True, slots=True)
class Pick:
    """One entry of `steps.<step>[{axis: value, ...}]`; None where only a render can tell
    (`{"product": matrix.product}` has a known axis and an unknown value)."""

    axis: str | None
    value: str | int | float | bool | None
    known: bool  # False: `value` is only known when the template is rendered

    def __str__(self) -> str:
        return f"{self.axis!r}: {self.value!r}" if self.known else f"{self.axis!r}: ..."


@dataclass(frozen=True, slots=True)
class Reference:
    """`steps.<step>.output<path>`, `.outputs<path>`, `.instances<path>`,
    `["KEY"]<path>` or `[{axis: value}]<path>` found in a template (or a file it
    includes: `file` then names it, and `line` is a line of that file)."""

    step: str
    kind: str | None  # "output", "outputs", a key, SELECT_KIND, or None for `steps.<step>`
    path: tuple[str | int, ...]  # after output / outputs; stops at the first dynamic part
    line: int
    file: str | None = None
    picks: tuple[Pick, ...] = ()  # the mapping of a SELECT_KIND reference

    def __str__(self) -> str:
        head = key_text(("steps", self.step))
        if self.kind == SELECT_KIND:
            head += "[{" + ", ".join(str(p) for p in self.picks) + "}]"
        elif self.kind is not None:
            head += f".{self.kind}" if self.kind.isidentifier() else f"[{self.kind!r}]"
        return head + (key_text(self.path, leading_dot=True) if self.path else "")


@dataclass(frozen=True, slots=True)
class ItemRead:
    """A filter reading an attribute of every item of a `steps` list:
    `steps.shot.outputs | selectattr('key', ...)` reads `key` of each output."""

    source: Reference
    path: tuple[str | int, ...]
    via: str  # the filter
    line: int
    file: str | None = None  # the included file it is in, if not the template itself


@dataclass(frozen=True, slots=True)
class PathRead:
    """`item.a.b` or `matrix.a` read in a template: the known parts, and where."""

    path: tuple[str | int, ...]
    line: int
    file: str | None = None  # the included file it is in, if not the template itself


@dataclass(frozen=True, slots=True)
class Analysis:
    """What one template (with its includes) reads."""

    references: tuple[Reference, ...]
    names: frozenset[str]  # undeclared names the template reads
    bad_steps_use: int | None  # line of a use of `steps` that is not steps.<name>
    name_lines: Mapping[str, int] = field(default_factory=dict)  # first line of each name
    item_reads: tuple[ItemRead, ...] = ()
    item_paths: tuple[PathRead, ...] = ()  # `item.a.b`
    matrix_paths: tuple[PathRead, ...] = ()  # `matrix.a`
    # The `steps` list whose items a lone `{{ steps.x.outputs | selectattr(...) | list }}`
    # gives unchanged (what a foreach's `item` then is), if the template is one.
    item_source: Reference | None = None


# Filters that give (some of) a list's items unchanged.
_KEEPS_ITEMS = frozenset({"selectattr", "rejectattr", "select", "reject", "list", "sort",
                          "unique", "reverse"})
# Filters that read an attribute of every item: the position of that argument (None when
# only `attribute=` names it).
_READS_ATTRIBUTE: Mapping[str, int | None] = {
    "selectattr": 0, "rejectattr": 0, "groupby": 0, "map": None, "sort": None, "sum": None,
    "unique": None, "min": None, "max": None}


def _steps_ref(node: nodes.Node) -> Reference | None:
    """The `steps.<step>...` reference `node` is (a chain without dynamic parts)."""
    if not isinstance(node, nodes.Getattr | nodes.Getitem):
        return None
    root, parts = _chain(node)
    if not (isinstance(root, nodes.Name) and root.name == "steps") or not parts or \
            not isinstance(parts[0], str) or \
            not all(isinstance(p, str | int) for p in parts[2:]):
        return None
    rest = parts[1:]
    if rest and isinstance(rest[0], tuple):
        return Reference(parts[0], SELECT_KIND, tuple(p for p in rest[1:]
                                                      if isinstance(p, str | int)),
                         node.lineno, picks=rest[0])
    kind = rest[0] if rest and isinstance(rest[0], str) else None
    if kind is None:
        return None
    path = tuple(p for p in rest[1:] if isinstance(p, str | int))
    return Reference(parts[0], kind, path, node.lineno)


def _list_source(node: nodes.Node) -> Reference | None:
    """The `steps` list whose items `node` gives unchanged, through item-keeping filters."""
    while isinstance(node, nodes.Filter) and node.name in _KEEPS_ITEMS and node.node is not None:
        node = node.node
    return _steps_ref(node)


def _attribute_arg(node: nodes.Filter) -> str | None:
    position = _READS_ATTRIBUTE.get(node.name, -1)
    if position == -1:
        return None
    for kw in node.kwargs:
        if kw.key == "attribute" and isinstance(kw.value, nodes.Const):
            return kw.value.value if isinstance(kw.value.value, str) else None
    if position is not None and len(node.args) > position:
        arg = node.args[position]
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
            return arg.value
    return None


def item_shapes(tree: nodes.Template
                ) -> tuple[list[ItemRead], list[PathRead], Reference | None]:
    """Attribute reads over `steps` lists, `item.<path>` reads, and the lone list source."""
    reads: list[ItemRead] = []
    for node in tree.find_all(nodes.Filter):
        attr = _attribute_arg(node)
        source = _list_source(node.node) if attr is not None and node.node is not None \
            else None
        if attr is None or source is None:
            continue
        path = tuple(int(p) if p.isdigit() else p for p in attr.split("."))
        reads.append(ItemRead(source, path, node.name, node.lineno))
    lone: Reference | None = None
    if len(tree.body) == 1 and isinstance(tree.body[0], nodes.Output) and \
            len(tree.body[0].nodes) == 1:
        lone = _list_source(tree.body[0].nodes[0])
    return reads, root_paths(tree, "item"), lone


def root_paths(tree: nodes.Template, name: str) -> list[PathRead]:
    """The known parts of every `name.a.b[0]` chain, with its line (none when a loop or
    an assignment may rebind `name`)."""
    if binds_names(tree):
        return []
    paths: list[PathRead] = []
    accesses: list[Any] = list(tree.find_all((nodes.Getattr, nodes.Getitem)))
    inner = {id(a.node) for a in accesses}
    for access in accesses:
        if id(access) in inner:
            continue
        root, parts = _chain(access)
        if isinstance(root, nodes.Name) and root.name == name:
            known: list[str | int] = []
            for part in parts:
                if not isinstance(part, str | int):
                    break
                known.append(part)
            if known:
                paths.append(PathRead(tuple(known), access.lineno))
    return paths


def binds_names(tree: nodes.Template) -> bool:
    """True when a loop, an assignment, a macro or an import may rebind a name."""
    return next(tree.find_all(_BINDING), None) is not None


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


def _chain(node: nodes.Node) -> tuple[nodes.Node, list[str | int | tuple[Pick, ...] | None]]:
    """The root of an access chain and its parts: a name or index where written as a
    constant, the picks of a `[{axis: value}]` mapping, None for anything computed."""
    parts: list[str | int | tuple[Pick, ...] | None] = []
    while True:
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, nodes.Getitem):
            arg = node.arg
            if isinstance(arg, nodes.Dict):
                parts.append(_picks(arg))
            else:
                parts.append(arg.value if isinstance(arg, nodes.Const)
                             and isinstance(arg.value, str | int) else None)
            node = node.node
        else:
            return node, parts[::-1]


def _picks(node: nodes.Dict) -> tuple[Pick, ...]:
    out: list[Pick] = []
    for pair in node.items:
        axis = pair.key.value if isinstance(pair.key, nodes.Const) and \
            isinstance(pair.key.value, str) else None
        value = pair.value
        if isinstance(value, nodes.Const) and (value.value is None or isinstance(
                value.value, str | int | float | bool)):
            out.append(Pick(axis, value.value, True))
        else:
            out.append(Pick(axis, None, False))
    return tuple(out)


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
        picks = rest[0] if rest and isinstance(rest[0], tuple) else ()
        kind = rest[0] if rest and isinstance(rest[0], str) else \
            SELECT_KIND if rest and isinstance(rest[0], tuple) else None
        path: list[str | int] = []
        for part in rest[1:]:
            if not isinstance(part, str | int):
                break
            path.append(part)
        refs.append(Reference(step, kind, tuple(path), access.lineno, picks=picks))
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
