"""Load YAML into plain JSON-like values while remembering where every node came from.

The loader is deliberately strict: duplicate keys, explicit tags that construct
objects, merge keys, alias bombs and non-mapping documents are refused with a
located Diagnostic instead of being silently accepted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from civflow.errors import Diagnostic, Location, PipelineInvalid
from civflow.keys import KeyPath

# A document may reuse anchors, but expanding them may not produce more than this
# many nodes: a few aliases of aliases otherwise make gigabytes (billion laughs).
MAX_DEPTH = 100  # deeper values are refused with their location, not a stack overflow
MAX_NODES = 200_000

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:timestamp",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}

_Loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_constructor = yaml.constructor.SafeConstructor()


@dataclass(frozen=True)
class SourceDoc:
    """A parsed YAML file: its data, its text, and the location of every node."""

    path: str
    text: str
    data: Any
    # path of a value -> where the value starts; path of a mapping entry -> where its key is
    value_locations: Mapping[KeyPath, Location] = field(repr=False)
    key_locations: Mapping[KeyPath, Location] = field(repr=False)
    # paths of scalars written in block style (| or >): their text starts on the next line
    block_scalars: frozenset[KeyPath] = field(default=frozenset(), repr=False)

    def location(self, path: KeyPath, *, key: bool = False) -> Location:
        """Where `path` is, or its nearest ancestor that has a location."""
        table = self.key_locations if key else self.value_locations
        probe = path
        while True:
            found = table.get(probe) or self.value_locations.get(probe)
            if found is not None:
                return found
            if not probe:
                return Location(self.path, 1, 1)
            probe = probe[:-1]

    def line_text(self, line: int) -> str | None:
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else None

    def diagnostic(self, message: str, path: KeyPath = (), *, key: bool = False,
                   hint: str | None = None, location: Location | None = None,
                   **kwargs: Any) -> Diagnostic:
        """A Diagnostic at `path` (or at an explicit location), with the source line."""
        where = location or self.location(path, key=key)
        return Diagnostic(message, where, hint, source_line=self.line_text(where.line), **kwargs)


def load_yaml(text: str, path: str) -> SourceDoc:
    """Parse one YAML document strictly; raise PipelineInvalid with a located error."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise PipelineInvalid([_syntax_diagnostic(exc, text, path)]) from None
    except yaml.YAMLError as exc:  # e.g. more than one document
        raise PipelineInvalid([Diagnostic(f"invalid YAML: {exc}", Location(path, 1, 1))]) from None
    if node is None:
        raise PipelineInvalid([Diagnostic(
            "the pipeline file is empty", Location(path, 1, 1),
            hint="start with 'version: 1', a 'name:' and a 'steps:' mapping")])
    builder = _Builder(path, text)
    data = builder.build(node, ())
    if not isinstance(data, dict):
        raise PipelineInvalid([builder.doc(data).diagnostic(
            f"the top level must be a mapping of keys, not {_kind(data)}", (),
            hint="a pipeline file starts with 'version: 1', 'name:' and 'steps:'")])
    return builder.doc(data)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    return f"a {type(value).__name__}" if not isinstance(value, str) else "a string"


def _mark_location(path: str, mark: Any) -> Location:
    return Location(path, mark.line + 1, mark.column + 1)


# Constructs whose error is found far from where they start (often at the end of the file):
# an unclosed quote, bracket or brace. The error points at their start instead.
_OPENED_CONSTRUCTS = {"while scanning a quoted scalar": "a quoted string",
                      "while parsing a flow sequence": "a list in [ ]",
                      "while parsing a flow mapping": "a mapping in { }"}


def _syntax_diagnostic(exc: yaml.MarkedYAMLError, text: str, path: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    opened = _OPENED_CONSTRUCTS.get(context)
    if opened and exc.context_mark is not None and \
            (exc.problem_mark is None or exc.problem_mark.line != exc.context_mark.line):
        mark = exc.context_mark
        found_at = exc.problem_mark.line + 1 if exc.problem_mark is not None else None
        problem = f"{opened} starts here and is not closed" + (
            f" ({problem} on line {found_at})" if found_at else "")
    elif context == "while scanning a simple key" and exc.context_mark is not None:
        mark = exc.context_mark  # the key without a colon, not the line after it
    elif exc.problem_mark is not None and (runaway := _runaway_quote(text, exc.problem_mark)):
        mark = runaway
        problem = (f"this quoted string is not closed on its line and runs on to line "
                   f"{exc.problem_mark.line + 1} ({problem} there)")
        context = "while scanning a quoted scalar"
    where = _mark_location(path, mark) if mark is not None else Location(path, 1, 1)
    lines = text.splitlines()
    line = lines[where.line - 1] if 0 < where.line <= len(lines) else None
    if "cannot start any token" in problem and line is not None and where.col <= len(line):
        problem = f"found character {line[where.col - 1]!r} that cannot start any token"
    hint = None
    if "'\\t'" in problem or (line is not None and "\t" in line[: max(where.col, 1)]):
        problem = "a tab character is not allowed in YAML indentation"
        hint = "indent with spaces"
    elif "expected <block end>" in problem or "mapping values are not allowed" in problem:
        hint = "check the indentation of this line and the one before it"
    elif "found undefined alias" in problem:
        hint = "define the anchor (&name) before using it (*name)"
    elif "could not find expected ':'" in problem:
        hint = "a key needs a colon and a space after it, e.g. 'key: value'"
    elif "flow sequence" in context:
        hint = "a list written [ ... ] needs its closing ']'; quote strings that hold '[' or ','"
    elif "'{'" in problem or "flow mapping" in context:
        hint = "quote strings that start with '{', such as templates: \"{{ ... }}\""
    elif "found unexpected end of stream" in problem or "quoted scalar" in context:
        hint = "a quoted string is not closed"
    elif "found character '%'" in problem or "found character '@'" in problem or \
            "found character '`'" in problem:
        hint = "quote values that start with % @ or `"
    if context == "while scanning a quoted scalar" and hint != "indent with spaces":
        hint = "a quoted string is not closed"
    return Diagnostic(f"invalid YAML: {problem}", where, hint, source_line=line)


def _runaway_quote(text: str, problem: Any) -> Any:
    """The start of a quoted string that spans lines and ends where parsing failed.

    An unclosed quote swallows the lines after it up to the next quote character; the
    parser then fails there, far from the mistake. Returns None when that is not the case.
    """
    found = None
    try:
        for token in yaml.scan(text, Loader=_Loader):
            start, end = token.start_mark, token.end_mark
            if start.line > problem.line:
                break
            if isinstance(token, yaml.ScalarToken) and token.style in ('"', "'") and \
                    start.line < end.line == problem.line:
                found = start
    except yaml.YAMLError:
        pass
    return found


@dataclass(frozen=True)
class _Mark:
    line: int  # 0-based, like yaml.Mark
    column: int


class _Builder:
    """Turns a composed node tree into data plus location tables."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.values: dict[KeyPath, Location] = {}
        self.keys: dict[KeyPath, Location] = {}
        self.blocks: set[KeyPath] = set()
        self.count = 0
        self.active: set[int] = set()

    def doc(self, data: Any) -> SourceDoc:
        return SourceDoc(self.path, self.text, data, self.values, self.keys, frozenset(self.blocks))

    def fail(self, message: str, mark: Any, hint: str | None = None) -> PipelineInvalid:
        where = _mark_location(self.path, mark)
        lines = self.text.splitlines()
        line = lines[where.line - 1] if 0 < where.line <= len(lines) else None
        return PipelineInvalid([Diagnostic(message, where, hint, source_line=line)])

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            # Aliases share one node, so point at the top-level entry that expanded, not
            # at the anchor far above it.
            top = next((self.keys[path[:n]] for n in range(len(path), 0, -1)
                        if path[:n] in self.keys), None)
            mark = _Mark(top.line - 1, top.col - 1) if top else node.start_mark
            raise self.fail(f"the document expands to more than {MAX_NODES} nodes",
                            mark, "aliases of aliases multiply; write values out")
        if len(path) > MAX_DEPTH:
            raise self.fail(f"the document is nested more than {MAX_DEPTH} levels deep",
                            node.start_mark, "pipeline files are shallow: flatten this value")
        if id(node) in self.active:
            raise self.fail("an alias refers to a node that contains it", node.start_mark,
                            "recursive anchors are not allowed")
        self.values.setdefault(path, _mark_location(self.path, node.start_mark))
        if node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise self.fail(f"the YAML tag '{tag}' is not allowed", node.start_mark,
                            "pipeline files hold plain data: remove the tag")
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return dict(self._mapping(node, path))
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> Iterator[tuple[str, Any]]:
        seen: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail("YAML merge keys (<<) are not supported", key_node.start_mark,
                                "use 'defaults:' for shared step input, or 'vars:'")
            if not isinstance(key_node, yaml.ScalarNode):
                hint = ("quote templates: a value starting with '{' is read as a mapping"
                        if isinstance(key_node, yaml.MappingNode) else None)
                raise self.fail("a mapping key must be a plain string", key_node.start_mark,
                                hint)
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                # `1: x` or `yes: x` would silently become int/bool keys; keys are names.
                key = key_node.value
            if key in seen:
                first = seen[key]
                raise self.fail(f"duplicate key {key!r} (first defined on line {first.line})",
                                key_node.start_mark, "remove one of the two entries")
            where = _mark_location(self.path, key_node.start_mark)
            seen[key] = where
            self.keys[(*path, key)] = where
            yield key, self.build(value_node, (*path, key))

    def _scalar(self, node: yaml.ScalarNode, path: KeyPath) -> Any:
        if node.style in ("|", ">"):
            self.blocks.add(path)
        tag = node.tag
        if tag == "tag:yaml.org,2002:str":
            return node.value
        if tag == "tag:yaml.org,2002:timestamp":
            return node.value  # keep dates as written: the API takes strings
        try:
            if tag == "tag:yaml.org,2002:int":
                return _constructor.construct_yaml_int(node)
            if tag == "tag:yaml.org,2002:float":
                return _constructor.construct_yaml_float(node)
            if tag == "tag:yaml.org,2002:bool":
                return _constructor.construct_yaml_bool(node)
        except (ValueError, yaml.YAMLError):
            raise self.fail(f"cannot read {node.value!r} as {tag.rsplit(':', 1)[-1]}",
                            node.start_mark) from None
        return None
