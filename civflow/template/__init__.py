"""Sandboxed Jinja rendering with native values, placeholders, and reference discovery.

A string that is exactly one `{{ expression }}` renders to the expression's own
value; anything else renders to text. References to `steps.<name>` are found in
the template's syntax tree, never with regular expressions.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from civflow.errors import CivflowError

__all__ = [
    "PENDING_MARK",
    "Analysis",
    "Pending",
    "Reference",
    "TemplateEngine",
    "TemplateFailed",
    "is_pending",
    "is_template",
]

PENDING_MARK = "<pending: "


class TemplateFailed(CivflowError):
    """A template could not be parsed or rendered; `line` is 1-based inside the template."""

    def __init__(self, message: str, *, line: int = 1, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.line = line


class Pending:
    """A value that is not known yet: an upstream output or a foreach item.

    Attribute and index access extend the reference, so `item.url` and
    `steps.hero.output.images[0].url` stay pending with a readable name.
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

    def __iter__(self) -> Iterator[Any]:
        # Without this, iteration would fall back to __getitem__(0, 1, ...) forever.
        raise TypeError(f"{self.ref} is not known yet")

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


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


@dataclass(frozen=True, slots=True)
class Reference:
    """`steps.<step>.output<path>` or `steps.<step>.outputs<path>` found in a template."""

    step: str
    kind: str | None  # "output", "outputs", or None for a bare `steps.<step>`
    path: tuple[str | int, ...]  # after output / outputs; stops at the first dynamic part
    line: int

    def __str__(self) -> str:
        text = f"steps.{self.step}"
        if self.kind:
            text += f".{self.kind}"
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else f".{part}"
        return text


@dataclass(frozen=True, slots=True)
class Analysis:
    references: tuple[Reference, ...]
    names: frozenset[str]  # undeclared names the template reads
    bad_steps_use: int | None  # line of a use of `steps` that is not steps.<name>
    name_lines: Mapping[str, int] = field(default_factory=dict)  # first line of each name


_LONE = re.compile(r"\s*\{\{(.*)\}\}\s*", re.DOTALL)


class _OutsideFolder(jinja2.TemplateNotFound):
    """An include that exists but resolves (via `..` or a symlink) outside the folder."""


_OUTSIDE_HINT = "includes may only load files in the pipeline's folder or below it"
_NOT_FOUND_HINT = "include paths are relative to the pipeline file's folder"


def _include_failure(name: str, exc: jinja2.TemplateNotFound, line: int) -> TemplateFailed:
    if isinstance(exc, _OutsideFolder):
        return TemplateFailed(f"include {name!r} is outside the pipeline's folder", line=line,
                              hint=_OUTSIDE_HINT)
    return TemplateFailed(f"included template {name!r} not found", line=line,
                          hint=_NOT_FOUND_HINT)


class _FolderLoader(jinja2.FileSystemLoader):
    """Loads includes from the pipeline's folder and refuses anything that leaves it."""

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        # Jinja itself refuses '..' as "not found"; say what really happened.
        if ".." in template.replace("\\", "/").split("/"):
            raise _OutsideFolder(template)
        source, filename, uptodate = super().get_source(environment, template)
        root = os.path.realpath(self.searchpath[0])
        if os.path.commonpath([root, os.path.realpath(filename)]) != root:
            raise _OutsideFolder(template)
        return source, filename, uptodate


class TemplateEngine:
    """Renders and analyses the templates of one pipeline file."""

    def __init__(self, base_dir: Path | None = None) -> None:
        loader = _FolderLoader(str(base_dir)) if base_dir is not None else None
        self.env = ImmutableSandboxedEnvironment(
            undefined=jinja2.StrictUndefined, loader=loader, autoescape=False,
            keep_trailing_newline=False)
        self._compiled: dict[str, Callable[[Mapping[str, Any]], Any]] = {}
        # lone expression -> its template line: tracebacks of compiled expressions carry
        # the line of Jinja's generated Python code, not of the template.
        self._lone_line: dict[str, int] = {}
        self._analysed: dict[str, Analysis] = {}

    # -- analysis ---------------------------------------------------------------

    def analyse(self, source: str) -> Analysis:
        """References, free names and misuse of `steps` in `source` and its includes."""
        cached = self._analysed.get(source)
        if cached is None:
            cached = self._analyse(source, seen=set())
            self._analysed[source] = cached
        return cached

    def _analyse(self, source: str, seen: set[str]) -> Analysis:
        tree = self._parse(source)
        refs, bad = _references(tree)
        names = _free_names(tree)
        lines: dict[str, int] = {}
        for node in tree.find_all(nodes.Name):
            if node.name in names and node.ctx == "load":
                lines.setdefault(node.name, node.lineno)
        for included in meta.find_referenced_templates(tree):
            if included is None or included in seen:
                continue
            seen.add(included)
            inner = self._analyse(self._include_source(included, tree), seen)
            refs.extend(inner.references)
            include_line = next((n.lineno for n in tree.find_all(nodes.Include)), 1)
            for name in inner.names - names:
                lines.setdefault(name, include_line)  # the include is what the user wrote
            names |= inner.names
            bad = bad or inner.bad_steps_use
        return Analysis(tuple(refs), frozenset(names), bad, lines)

    def _include_source(self, name: str, tree: nodes.Template) -> str:
        line = next((n.lineno for n in tree.find_all(nodes.Include)), 1)
        if self.env.loader is None:
            raise TemplateFailed(f"cannot include {name!r} here", line=line)
        try:
            source, _, _ = self.env.loader.get_source(self.env, name)
        except jinja2.TemplateNotFound as exc:
            raise _include_failure(name, exc, line) from None
        except OSError as exc:
            raise TemplateFailed(f"cannot read included template {name!r}: {exc.strerror}",
                                 line=line) from None
        return source

    def _parse(self, source: str) -> nodes.Template:
        try:
            return self.env.parse(source)
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_failure(exc) from None

    # -- rendering --------------------------------------------------------------

    def render(self, source: str, context: Mapping[str, Any]) -> Any:
        """Render one string: a lone `{{ expr }}` keeps its type, anything else is text."""
        run = self._compiled.get(source)
        if run is None:
            run = self._compile(source)
            self._compiled[source] = run
        lone_line = self._lone_line.get(source)
        try:
            return run(context)
        except TemplateFailed:
            raise
        except jinja2.UndefinedError as exc:
            raise TemplateFailed(_undefined_message(exc),
                                 line=lone_line or _error_line(exc)) from None
        except jinja2.TemplateNotFound as exc:
            raise _include_failure(str(exc.name), exc, lone_line or _error_line(exc)) from None
        except SecurityError as exc:
            raise TemplateFailed(f"template error: {exc.message}",
                                 line=lone_line or _error_line(exc),
                                 hint="templates run in a sandbox without Python internals"
                                 ) from None
        except jinja2.TemplateError as exc:
            raise TemplateFailed(f"template error: {exc.message}",
                                 line=lone_line or _error_line(exc)) from None
        except Exception as exc:  # errors raised by expressions: 1/0, int('x'), ...
            if _mentions_pending(context):
                return Pending(f"template {source.strip()!r}")
            raise TemplateFailed(f"template error: {type(exc).__name__}: {exc}",
                                 line=lone_line or _error_line(exc)) from None

    def _simple_path(self, source: str) -> tuple[Any, ...] | None:
        """`name.attr[0]['key']` as a path, or None for any other expression.

        Most pipeline templates are such lookups (`item.url`, `matrix.seed`,
        `steps.hero.output.images[0].url`); walking them directly skips Jinja's code
        generator, which costs about a millisecond per distinct template.
        """
        try:
            tree = self.env.parse(source)
        except jinja2.TemplateSyntaxError:
            return None  # compile_expression reports it with Jinja's own words
        if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
            return None
        outputs = [n for n in tree.body[0].nodes if not
                   (isinstance(n, nodes.TemplateData) and not n.data.strip())]
        if len(outputs) != 1:
            return None
        node = outputs[0]
        steps: list[tuple[bool, str | int]] = []  # (is attribute access, key)
        while not isinstance(node, nodes.Name):
            if isinstance(node, nodes.Getattr):
                steps.append((True, node.attr))
            elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                    and isinstance(node.arg.value, str | int) \
                    and not isinstance(node.arg.value, bool):
                steps.append((False, node.arg.value))
            else:
                return None
            node = node.node
        return (node.name, *steps[::-1])

    def _lookup(self, path: tuple[Any, ...]) -> Callable[[Mapping[str, Any]], Any]:
        env, name, rest = self.env, str(path[0]), path[1:]

        def evaluate(context: Mapping[str, Any]) -> Any:
            value: Any = context[name] if name in context else env.undefined(name=name)
            # The sandbox's getattr/getitem refuse unsafe attributes exactly as compiled
            # templates do, and fall back from attribute to item (and back) like Jinja.
            for is_attr, key in rest:
                if isinstance(value, jinja2.Undefined):
                    break
                value = env.getattr(value, key) if is_attr else env.getitem(value, key)
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()
            return value
        return evaluate

    def _compile(self, source: str) -> Callable[[Mapping[str, Any]], Any]:
        if not is_template(source):
            return lambda _context: source
        lone = _LONE.fullmatch(source)
        if lone and not any(mark in lone.group(1) for mark in ("{{", "}}", "{%", "{#")):
            self._lone_line[source] = source[: lone.start(1)].count("\n") + 1
            path = self._simple_path(source)
            if path is not None:
                return self._lookup(path)
            try:
                expression = self.env.compile_expression(lone.group(1), undefined_to_none=False)
            except jinja2.TemplateSyntaxError as exc:
                raise _syntax_failure(exc) from None

            def evaluate(context: Mapping[str, Any]) -> Any:
                value = expression(**context)
                if isinstance(value, jinja2.Undefined):
                    value._fail_with_undefined_error()
                return value
            return evaluate
        try:
            template = self.env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_failure(exc) from None
        return lambda context: template.render(context)


def _syntax_failure(exc: jinja2.TemplateSyntaxError) -> TemplateFailed:
    message = exc.message or "invalid template"
    if "expected 'end of print statement'" in message:
        hint = "close the expression with }}"
    elif "expected token 'end of print statement'" in message:
        hint = "one expression per {{ }}: join words with ~ or use an operator"
    elif "unknown tag" in message or "end of template" in message:
        hint = "every {% if %} needs its {% endif %}, every {% for %} its {% endfor %}"
    else:
        hint = "expressions go in {{ ... }}, statements in {% ... %}"
    return TemplateFailed(f"template syntax error: {message}", line=exc.lineno or 1, hint=hint)


def _mentions_pending(context: Mapping[str, Any]) -> bool:
    def walk(value: Any, depth: int) -> bool:
        if isinstance(value, Pending):
            return True
        if depth > 4:
            return False
        if isinstance(value, Mapping):
            return any(walk(v, depth + 1) for v in value.values())
        if isinstance(value, list | tuple):
            return any(walk(v, depth + 1) for v in value[:50])
        return False
    return walk(context, 0)


def _undefined_message(exc: jinja2.UndefinedError) -> str:
    text = exc.message or "undefined value"
    match = re.match(r"'(\w+)' is undefined", text)
    if match:
        return f"undefined name '{match.group(1)}'"
    match = re.match(r"'(.+?)' has no attribute '(.+?)'", text)
    if match:
        return f"{match.group(1).split(' object')[0]} has no attribute '{match.group(2)}'"
    return text


def _error_line(exc: BaseException) -> int:
    """The template line of an exception raised while rendering, from its traceback."""
    line = getattr(exc, "lineno", None)
    if isinstance(line, int):
        return line
    tb = exc.__traceback__
    found = 1
    while tb is not None:
        if tb.tb_frame.f_code.co_filename in ("<template>", "<unknown>"):
            found = tb.tb_lineno
        tb = tb.tb_next
    return found


# Statements that bind names; without them every loaded name is free.
_BINDING = (nodes.For, nodes.Assign, nodes.AssignBlock, nodes.Macro, nodes.CallBlock,
            nodes.With, nodes.Import, nodes.FromImport)


def _free_names(tree: nodes.Template) -> set[str]:
    """Names a template reads from its context.

    Jinja's own `meta.find_undeclared_variables` runs the whole code generator, about
    half a millisecond per template; most templates bind nothing, and for them the
    loaded names of the syntax tree are the answer.
    """
    if any(True for _ in tree.find_all(_BINDING)):
        return set(meta.find_undeclared_variables(tree))
    return {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"}


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


def _references(tree: nodes.Template) -> tuple[list[Reference], int | None]:
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
