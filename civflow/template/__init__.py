"""Sandboxed Jinja rendering with native values, placeholders, and reference discovery.

A string that is exactly one `{{ expression }}` renders to the expression's own
value; anything else renders to text. References to `steps.<name>` are found in
the template's syntax tree, never with regular expressions.

Every render is bounded (`Limits`): arithmetic, repetition, loops, calls, output
and time. A render is pending only when it needed the value of a `Pending`
placeholder; any other error is a `TemplateFailed` with the template line.

The work is split across private modules: `_pending` (placeholders), `_sandbox`
(the bounded Jinja environment) and `_analyse` (syntax-tree reading).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.loaders import split_template_path

from civflow.errors import TemplateFailed
from civflow.template._analyse import (
    SELECT_KIND,
    Analysis,
    ItemRead,
    PathRead,
    Pick,
    Reference,
    binds_names,
    free_names,
    is_template,
    item_shapes,
    references,
    root_paths,
    walk_strings,
)
from civflow.template._limits import LimitExceeded, Limits
from civflow.template._pending import PENDING_MARK, NotYetKnown, Pending, is_pending
from civflow.template._sandbox import BoundedSandbox

__all__ = [
    "MAX_INCLUDE_BYTES",
    "PENDING_MARK",
    "SELECT_KIND",
    "Analysis",
    "ItemRead",
    "Limits",
    "LookupFailed",
    "PathRead",
    "Pending",
    "Pick",
    "Reference",
    "TemplateEngine",
    "TemplateFailed",
    "is_pending",
    "is_template",
    "walk_strings",
]

# An included template larger than this is refused before it is read.
MAX_INCLUDE_BYTES = 1 * 2**20


_LONE = re.compile(r"\s*\{\{(.*)\}\}\s*", re.DOTALL)

# Jinja gives an imported template none of the importer's names unless asked to.
_IMPORT_WITHOUT_CONTEXT = re.compile(r"\{%-?\s*(?:from|import)\s(?:(?!%\}).)*?"
                                     r"(?<!with context)\s*-?%\}", re.DOTALL)
_IMPORT_HINT = ("an imported macro sees steps, item and the vars only when imported "
                "'with context': {% from \"FILE\" import NAME with context %}")
_RECURSION_HINT = "a macro or include that uses itself needs a condition that stops it"
_NESTING_HINT = "split the expression; brackets and blocks this deep cannot be read"


class LookupFailed(jinja2.UndefinedError):
    """Raised by a value a template looks into when the lookup cannot work (a selection
    of instances that matches none): reported located, with its hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class _OutsideFolder(jinja2.TemplateNotFound):
    """An include that exists but resolves (via `..` or a symlink) outside the folder."""


_OUTSIDE_HINT = "includes may only load files in the pipeline's folder or below it"
_NOT_FOUND_HINT = "include paths are relative to the pipeline file's folder"


class _UnreadableInclude(jinja2.TemplateNotFound):
    """An include that exists but is not a regular file, or is too big to read."""

    def __init__(self, name: str, reason: str, hint: str) -> None:
        super().__init__(name)
        self.reason = reason
        self.hint = hint


def _include_failure(name: str, exc: jinja2.TemplateNotFound, line: int) -> TemplateFailed:
    if isinstance(exc, _UnreadableInclude):
        return TemplateFailed(f"included template {name!r} {exc.reason}", line=line,
                              hint=exc.hint)
    if isinstance(exc, _OutsideFolder):
        return TemplateFailed(f"include {name!r} is outside the pipeline's folder", line=line,
                              hint=_OUTSIDE_HINT)
    return TemplateFailed(f"included template {name!r} not found", line=line,
                          hint=_NOT_FOUND_HINT)


class _FolderLoader(jinja2.FileSystemLoader):
    """Loads includes from the pipeline's folder, then from the project's root (shared
    prompt snippets), and refuses anything that leaves the folder it was found in."""

    def get_source(self, environment: jinja2.Environment, template: str
                   ) -> tuple[str, str, Callable[[], bool]]:
        # Jinja itself refuses '..' as "not found"; say what really happened.
        if ".." in template.replace("\\", "/").split("/"):
            raise _OutsideFolder(template)
        for folder in self.searchpath:
            path = os.path.join(folder, *split_template_path(template))
            if not os.path.lexists(path):
                continue
            _check_include_file(path, template)
            root = os.path.realpath(folder)
            if os.path.commonpath([root, os.path.realpath(path)]) != root:
                raise _OutsideFolder(template)
            source, filename, uptodate = jinja2.FileSystemLoader(folder).get_source(
                environment, template)
            return source, filename, uptodate
        raise jinja2.TemplateNotFound(template)


class TemplateEngine:
    """Renders and analyses the templates of one pipeline file."""

    def __init__(self, base_dir: Path | None = None, *, limits: Limits | None = None,
                 shared_dir: Path | None = None) -> None:
        folders = [str(d) for d in (base_dir, shared_dir) if d is not None]
        loader = _FolderLoader(list(dict.fromkeys(folders))) if folders else None
        self.limits = limits or Limits()
        self.env = BoundedSandbox(
            self.limits, undefined=jinja2.StrictUndefined, loader=loader, autoescape=False,
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
            try:
                cached = self._analyse(source, seen=set())
            except RecursionError:
                raise TemplateFailed("the template is nested too deeply to read",
                                     hint=_NESTING_HINT) from None
            self._analysed[source] = cached
        return cached

    def _analyse(self, source: str, seen: set[str], *, filename: str | None = None
                 ) -> Analysis:
        tree = self._parse(source, filename)
        refs, bad = references(tree)
        names = free_names(tree)
        lines: dict[str, int] = {}
        for node in tree.find_all(nodes.Name):
            if node.name in names and node.ctx == "load":
                lines.setdefault(node.name, node.lineno)
        reads, paths, lone = item_shapes(tree)
        matrix_paths = root_paths(tree, "matrix")
        for included in meta.find_referenced_templates(tree):
            if included is None or included in seen:
                continue
            seen.add(included)
            source, inner_file = self._include_source(included, tree)
            try:
                inner = self._analyse(source, seen, filename=inner_file)
            except TemplateFailed as exc:
                # Located in the included file, where the mistake is, not at the include.
                if exc.file is None:
                    exc.file = inner_file
                raise
            # What an included file reads is checked like the template's own reads, and
            # reported in that file, at its line.
            refs.extend(_in_file(r, inner_file) for r in inner.references)
            reads.extend(dataclasses.replace(r, file=r.file or inner_file,
                                             source=_in_file(r.source, inner_file))
                         for r in inner.item_reads)
            if not binds_names(tree):  # else `item` or `matrix` may mean something else
                paths.extend(dataclasses.replace(p, file=p.file or inner_file)
                             for p in inner.item_paths)
                matrix_paths.extend(dataclasses.replace(p, file=p.file or inner_file)
                                    for p in inner.matrix_paths)
            include_line = next((n.lineno for n in tree.find_all(nodes.Include)), 1)
            for name in inner.names - names:
                lines.setdefault(name, include_line)  # the include is what the user wrote
            names |= inner.names
            bad = bad or inner.bad_steps_use
        return Analysis(tuple(refs), frozenset(names), bad, lines, tuple(reads), tuple(paths),
                        tuple(matrix_paths), lone)

    def _include_source(self, name: str, tree: nodes.Template) -> tuple[str, str | None]:
        line = next((n.lineno for n in tree.find_all(nodes.Include)), 1)
        if self.env.loader is None:
            raise TemplateFailed(f"cannot include {name!r} here", line=line)
        try:
            source, filename, _ = self.env.loader.get_source(self.env, name)
        except jinja2.TemplateNotFound as exc:
            raise _include_failure(name, exc, line) from None
        except OSError as exc:
            raise TemplateFailed(f"cannot read included template {name!r}: {exc.strerror}",
                                 line=line) from None
        return source, filename

    def _parse(self, source: str, filename: str | None = None) -> nodes.Template:
        try:
            return self.env.parse(source, filename=filename)
        except jinja2.TemplateSyntaxError as exc:
            raise _syntax_failure(exc) from None

    # -- rendering --------------------------------------------------------------

    def render(self, source: str, context: Mapping[str, Any]) -> Any:
        """Render one string: a lone `{{ expr }}` keeps its type, anything else is text.

        Returns a `Pending` when the template needed a value that is not known yet;
        raises TemplateFailed for every other error, and when a limit is exceeded.
        """
        if not is_template(source):
            return source  # plain text: most keys and many values; nothing to meter
        run = self._compiled.get(source)
        if run is None:
            try:
                run = self._compile(source)
            except RecursionError:
                raise TemplateFailed("the template is nested too deeply to read",
                                     hint=_NESTING_HINT) from None
            self._compiled[source] = run
        lone_line = self._lone_line.get(source)
        try:
            with self.env.metered():
                return run(context)
        except TemplateFailed:
            raise
        except NotYetKnown:
            return Pending(f"template {source.strip()!r}")
        except LimitExceeded as exc:
            raise TemplateFailed(f"template limit: {exc.message}",
                                 line=lone_line or _error_line(exc), hint=exc.hint) from None
        except RecursionError as exc:
            raise TemplateFailed("template error: recursion too deep",
                                 line=lone_line or _error_line(exc), hint=_RECURSION_HINT
                                 ) from None
        except MemoryError:
            raise TemplateFailed("template error: out of memory", line=lone_line or 1,
                                 hint="build smaller values") from None
        except jinja2.UndefinedError as exc:
            hint = exc.hint if isinstance(exc, LookupFailed) else \
                _IMPORT_HINT if _IMPORT_WITHOUT_CONTEXT.search(source) else None
            raise TemplateFailed(_undefined_message(exc), line=lone_line or _error_line(exc),
                                 hint=hint) from None
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
        except Exception as exc:  # errors raised by expressions: 1/0, int('x'), 'a' > 1, ...
            raise TemplateFailed(f"template error: {type(exc).__name__}: {exc}",
                                 line=lone_line or _error_line(exc)) from None

    def _simple_path(self, source: str) -> tuple[Any, ...] | None:
        """`name.attr[0]['key']` as a path, or None for any other expression.

        Most pipeline templates are such lookups (`item.url`, `matrix.seed`,
        `steps.hero.output.images[0].url`); walking them directly skips Jinja's code
        generator, which costs about a millisecond per distinct template.
        """
        parts = self._text_and_paths(source)
        if parts is None:
            return None
        paths = [p for p in parts if not (isinstance(p, str) and not p.strip())]
        return paths[0] if len(paths) == 1 and isinstance(paths[0], tuple) else None

    def _text_and_paths(self, source: str) -> list[str | tuple[Any, ...]] | None:
        """A template of text and lookups only (`"shot {{ matrix.seed }}"`), as its text
        pieces (as Jinja's lexer left them) and paths in order; None for any other."""
        try:
            tree = self.env.parse(source)
        except jinja2.TemplateSyntaxError:
            return None  # compile_expression reports it with Jinja's own words
        if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
            return None
        parts: list[str | tuple[Any, ...]] = []
        for node in tree.body[0].nodes:
            path = node.data if isinstance(node, nodes.TemplateData) else _path_of(node)
            if path is None:
                return None
            parts.append(path)
        return parts

    def _text_with_lookups(self, parts: list[str | tuple[Any, ...]],
                           template: jinja2.Template) -> Callable[[Mapping[str, Any]], Any]:
        """Text and lookups rendered without Jinja's runtime (a new context for every
        render is most of its cost), when every value is a string or a whole number, as
        Jinja would write them. Anything else (a missing name, a pending output, another
        type, output over the limit) is rendered by Jinja, so it reads exactly as before."""
        env = self.env
        steps = [(part, None) if isinstance(part, str) else ("", self._lookup(part))
                 for part in parts]

        def evaluate(context: Mapping[str, Any]) -> Any:
            texts: list[str] = []
            for text, lookup in steps:
                if lookup is None:
                    texts.append(text)
                    continue
                try:
                    value = lookup(context)
                    if type(value) is not str and type(value) is not int:
                        return template.render(context)
                    texts.append(str(value))
                except Exception:
                    return template.render(context)
            budget = env.budget()
            if budget.output + sum(map(len, texts)) > self.limits.max_output:
                return template.render(context)  # over the limit: Jinja says where
            return "".join([budget.emit(text) for text in texts])
        return evaluate

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
        parts = self._text_and_paths(source)
        if parts is not None:
            return self._text_with_lookups(parts, template)
        return lambda context: template.render(context)


def _path_of(node: nodes.Node) -> tuple[Any, ...] | None:
    """`name.attr[0]['key']` as (name, (is attribute, key)...); None for any other node."""
    steps: list[tuple[bool, str | int]] = []
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


def _in_file(ref: Reference, file: str | None) -> Reference:
    """`ref`, read in the included `file` unless it was already placed deeper."""
    return ref if ref.file is not None else dataclasses.replace(ref, file=file)


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
    return TemplateFailed(f"template syntax error: {message}", line=exc.lineno or 1, hint=hint,
                          file=exc.filename)


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




def _check_include_file(path: str, name: str) -> None:
    """Refuse an include that is not a regular file, or is too big, before reading it.

    A FIFO or a device in the pipeline's folder would otherwise block or never end.
    """
    try:
        info = os.stat(path)
    except OSError:
        return  # Jinja reports it as not found
    if not stat.S_ISREG(info.st_mode):
        raise _UnreadableInclude(name, "is not a regular file", "include ordinary text files")
    if info.st_size > MAX_INCLUDE_BYTES:
        raise _UnreadableInclude(name, f"is larger than {MAX_INCLUDE_BYTES:,} bytes",
                                 "an include is a prompt fragment, not a data file")
