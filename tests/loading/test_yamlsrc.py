"""The strict, located YAML loader: every node keeps its place, hostile YAML is refused."""

from __future__ import annotations

import pytest

from civflow.errors import Location, PipelineInvalid
from civflow.loading.yamlsrc import load_yaml


def _error(text: str) -> tuple[str, Location, str | None]:
    with pytest.raises(PipelineInvalid) as info:
        load_yaml(text, "p.yaml")
    (diag,) = info.value.diagnostics
    assert diag.location is not None
    return diag.message, diag.location, diag.hint


def test_every_value_and_key_keeps_its_line_and_column() -> None:
    doc = load_yaml("version: 1\nsteps:\n  hero:\n    type: imageGen\n    input: {a: [1, 2]}\n",
                    "p.yaml")
    assert doc.data == {"version": 1, "steps": {"hero": {"type": "imageGen",
                                                          "input": {"a": [1, 2]}}}}
    assert doc.location(("steps", "hero", "type")) == Location("p.yaml", 4, 11)
    assert doc.location(("steps", "hero", "type"), key=True) == Location("p.yaml", 4, 5)
    assert doc.location(("steps", "hero", "input", "a", 1)) == Location("p.yaml", 5, 20)
    # An unknown path falls back to its nearest known ancestor.
    assert doc.location(("steps", "hero", "input", "zzz")) == Location("p.yaml", 5, 12)
    assert doc.line_text(4) == "    type: imageGen"


def test_block_scalars_are_remembered() -> None:
    doc = load_yaml("a: |\n  one\n  two\nb: plain\n", "p.yaml")
    assert doc.data["a"] == "one\ntwo\n"
    assert ("a",) in doc.block_scalars
    assert ("b",) not in doc.block_scalars


def test_duplicate_key_points_at_the_second_and_names_the_first() -> None:
    message, where, hint = _error("name: a\nversion: 1\nname: b\n")
    assert message == "duplicate key 'name' (first defined on line 1)"
    assert where == Location("p.yaml", 3, 1)
    assert hint == "remove one of the two entries"


def test_nested_duplicate_key() -> None:
    message, where, _ = _error("steps:\n  a:\n    type: x\n    type: y\n")
    assert message == "duplicate key 'type' (first defined on line 3)"
    assert where == Location("p.yaml", 4, 5)


@pytest.mark.parametrize("text,expected", [
    ("", "the pipeline file is empty"),
    ("# only a comment\n", "the pipeline file is empty"),
    ("- a\n- b\n", "the top level must be a mapping of keys, not a list"),
    ("just text\n", "the top level must be a mapping of keys, not a string"),
    ("42\n", "the top level must be a mapping of keys, not a int"),
])
def test_non_mapping_documents_are_refused(text: str, expected: str) -> None:
    message, where, hint = _error(text)
    assert message == expected
    assert where.line == 1
    assert hint


def test_tab_indentation_is_a_located_error_with_a_hint() -> None:
    message, where, hint = _error("steps:\n  a:\n\ttype: x\n")
    assert message == "invalid YAML: a tab character is not allowed in YAML indentation"
    assert where.line == 3
    assert hint == "indent with spaces"


@pytest.mark.parametrize("tag", ["!!python/object:os.system", "!!python/name:os.system",
                                 "!!binary", "!custom", "!!set"])
def test_object_constructing_tags_are_refused(tag: str) -> None:
    message, where, hint = _error(f"version: 1\nname: {tag} x\n")
    assert message.startswith("the YAML tag '")
    assert message.endswith("' is not allowed")
    assert where == Location("p.yaml", 2, 7)
    assert hint == "pipeline files hold plain data: remove the tag"


def test_alias_bomb_is_refused_at_the_entry_that_explodes() -> None:
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    message, where, hint = _error("\n".join(lines) + "\n")
    assert message == "the document expands to more than 200000 nodes"
    assert where.line == 6  # 'f' is the first entry past the limit
    assert hint is not None and "aliases" in hint


def test_small_aliases_are_allowed() -> None:
    doc = load_yaml("x: &x {a: 1}\ny: *x\n", "p.yaml")
    assert doc.data == {"x": {"a": 1}, "y": {"a": 1}}


def test_merge_keys_are_refused() -> None:
    message, where, hint = _error("base: &b {a: 1}\nother:\n  <<: *b\n")
    assert message == "YAML merge keys (<<) are not supported"
    assert where == Location("p.yaml", 3, 3)
    assert hint is not None


def test_keys_stay_strings_and_dates_stay_text() -> None:
    doc = load_yaml("1: one\nyes: y\nwhen: 2024-01-02\n", "p.yaml")
    assert doc.data == {"1": "one", "yes": "y", "when": "2024-01-02"}


def test_syntax_error_is_located() -> None:
    message, where, hint = _error("version: 1\nname: \"open\nsteps: {}\n")
    assert message.startswith("invalid YAML: ")
    assert where.line >= 2
    assert hint == "a quoted string is not closed"


def test_several_documents_are_refused() -> None:
    message, where, _ = _error("a: 1\n---\nb: 2\n")
    assert message.startswith("invalid YAML:")
    assert where.line >= 1


def test_unclosed_quote_points_where_the_quote_opens() -> None:
    """Promise (issue 13): a scanner error points at the start of the broken construct."""
    message, where, hint = _error("version: 1\nname: \"open\nsteps: {}\n")
    assert (where.line, where.col) == (2, 7)
    assert message.startswith("invalid YAML: a quoted string starts here and is not closed")
    assert hint == "a quoted string is not closed"


def test_quote_that_runs_on_to_a_later_quote_points_where_it_opens() -> None:
    text = "a: 1\nb: \"open\nc: 2\nd: \"x\" y\n"
    message, where, hint = _error(text)
    assert (where.line, where.col) == (2, 4)
    assert "runs on to line 4" in message
    assert hint == "a quoted string is not closed"


def test_unclosed_bracket_and_colonless_key_point_at_their_start() -> None:
    _, where, hint = _error("a: 1\nb: [1, 2\nc: 3\n")
    assert (where.line, where.col) == (2, 4) and hint is not None and "']'" in hint
    _, where, hint = _error("a: 1\nb c\nd: 2\n")
    assert (where.line, where.col) == (2, 1)
    assert hint == "a key needs a colon and a space after it, e.g. 'key: value'"


def test_a_value_nested_too_deeply_is_located() -> None:
    """Promise: hostile input gets a located error, never a RecursionError."""
    text = "a: " + "[" * 150 + "]" * 150 + "\n"
    with pytest.raises(PipelineInvalid) as caught:
        load_yaml(text, "deep.yaml")
    (diag,) = caught.value.diagnostics
    assert diag.message == "the document is nested more than 100 levels deep"
    assert diag.location is not None and diag.location.line == 1
