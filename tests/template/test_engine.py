"""The sandboxed template engine: native values, strict names, includes, references."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from civflow.template import (
    Limits,
    Pending,
    Reference,
    TemplateEngine,
    TemplateFailed,
    is_pending,
    is_template,
    walk_strings,
)


@pytest.fixture
def engine(tmp_path: Path) -> TemplateEngine:
    folder = tmp_path / "pipes"
    (folder / "prompts").mkdir(parents=True)
    (folder / "prompts" / "hero.j2").write_text("{{ subject }}, {{ style }}", encoding="utf-8")
    (folder / "prompts" / "uses.j2").write_text("{{ steps.hero.output.images[0].url }}",
                                                encoding="utf-8")
    (tmp_path / "secret.txt").write_text("top secret", encoding="utf-8")
    os.symlink(tmp_path / "secret.txt", folder / "prompts" / "escape.j2")
    return TemplateEngine(folder)


def _fails(engine: TemplateEngine, source: str, context: dict[str, Any] | None = None
           ) -> TemplateFailed:
    with pytest.raises(TemplateFailed) as info:
        engine.render(source, context or {})
    return info.value


@pytest.mark.parametrize("source,context,expected", [
    ("{{ seed }}", {"seed": 42}, 42),
    ("  {{ seed }}  ", {"seed": 42}, 42),
    ("{{ ratio }}", {"ratio": 0.5}, 0.5),
    ("{{ flag }}", {"flag": False}, False),
    ("{{ items }}", {"items": [1, "a"]}, [1, "a"]),
    ("{{ m }}", {"m": {"a": {"b": 1}}}, {"a": {"b": 1}}),
    ("{{ none }}", {"none": None}, None),
    ("{{ a + b }}", {"a": 1, "b": 2}, 3),
    ("{{ [w, h] }}", {"w": 8, "h": 9}, [8, 9]),
    ("seed {{ seed }}", {"seed": 42}, "seed 42"),
    ("{{ a }}{{ b }}", {"a": 1, "b": 2}, "12"),
    ("{% if a %}yes{% endif %}", {"a": 1}, "yes"),
    ("no template", {}, "no template"),
    ("{{ '{{' }}", {}, "{{"),
])
def test_lone_expressions_keep_their_native_type(engine: TemplateEngine, source: str,
                                                 context: dict[str, Any], expected: Any
                                                 ) -> None:
    value = engine.render(source, context)
    assert value == expected
    assert type(value) is type(expected)


def test_undefined_names_are_errors(engine: TemplateEngine) -> None:
    assert _fails(engine, "{{ subjet }}").message == "undefined name 'subjet'"
    assert _fails(engine, "a {{ subjet }} b").message == "undefined name 'subjet'"
    failed = _fails(engine, "{{ m.missing }}", {"m": {"a": 1}})
    assert "has no attribute 'missing'" in failed.message


def test_error_lines_inside_multiline_templates(engine: TemplateEngine) -> None:
    assert _fails(engine, "line one\nline two {{ nope }}\n").line == 2
    assert _fails(engine, "\n\n{{ nope }}").line == 3
    assert _fails(engine, "{{ 1 / 0 }}").line == 1
    assert _fails(engine, "a\n{% if %}\n").line == 2


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ x.__class__.__subclasses__() }}",
    "{{ x.__init__.__globals__ }}",
    "{{ f.__globals__ }}",
])
def test_the_sandbox_refuses_python_internals(engine: TemplateEngine, source: str) -> None:
    failed = _fails(engine, source, {"x": 1, "f": test_the_sandbox_refuses_python_internals})
    assert failed.message.startswith("template error:")
    assert failed.hint == "templates run in a sandbox without Python internals"


def test_the_sandbox_is_immutable(engine: TemplateEngine) -> None:
    data = {"items": [1]}
    failed = _fails(engine, "{{ items.append(2) }}", data)
    assert failed.message.startswith("template error:")
    assert data == {"items": [1]}


def test_no_environment_or_builtins(engine: TemplateEngine) -> None:
    for name in ("os", "open", "__import__", "environ"):
        assert _fails(engine, f"{{{{ {name} }}}}").message == f"undefined name '{name}'"


def test_include_inside_the_folder(engine: TemplateEngine) -> None:
    text = engine.render('{% include "prompts/hero.j2" %}!', {"subject": "fox", "style": "oil"})
    assert text == "fox, oil!"
    assert engine.analyse('{% include "prompts/hero.j2" %}').names == {"subject", "style"}


def test_include_with_dot_dot_is_refused(engine: TemplateEngine) -> None:
    failed = _fails(engine, '{% include "../secret.txt" %}')
    assert failed.message == "include '../secret.txt' is outside the pipeline's folder"
    assert failed.hint == "includes may only load files in the pipeline's folder or below it"
    with pytest.raises(TemplateFailed, match="outside the pipeline's folder"):
        engine.analyse('x\n{% include "prompts/../../secret.txt" %}')


def test_include_through_a_symlink_leaving_the_folder_is_refused(engine: TemplateEngine
                                                                  ) -> None:
    failed = _fails(engine, '{% include "prompts/escape.j2" %}')
    assert failed.message == "include 'prompts/escape.j2' is outside the pipeline's folder"
    with pytest.raises(TemplateFailed) as info:
        engine.analyse('a\nb\n{% include "prompts/escape.j2" %}')
    assert info.value.line == 3


def test_include_not_found(engine: TemplateEngine) -> None:
    failed = _fails(engine, '{% include "prompts/nope.j2" %}')
    assert failed.message == "included template 'prompts/nope.j2' not found"
    assert failed.hint == "include paths are relative to the pipeline file's folder"


def test_include_without_a_folder(tmp_path: Path) -> None:
    with pytest.raises(TemplateFailed, match="cannot include"):
        TemplateEngine(None).analyse('{% include "x.j2" %}')


def test_references_come_from_the_syntax_tree(engine: TemplateEngine) -> None:
    analysis = engine.analyse(
        "{{ steps.hero.output.images[0].url }}\n"
        "{% for o in steps.sweep.outputs %}{{ o }}{% endfor %}\n"
        "{{ steps['up'].outputs[i].blob }} {{ 'steps.fake.output' }}")
    assert set(analysis.references) == {
        Reference("hero", "output", ("images", 0, "url"), 1),
        Reference("sweep", "outputs", (), 2),
        Reference("up", "outputs", (), 3),
    }
    assert analysis.bad_steps_use is None
    assert "steps" in analysis.names and "i" in analysis.names


def test_references_through_includes(engine: TemplateEngine) -> None:
    analysis = engine.analyse('{% include "prompts/uses.j2" %}')
    assert [r.step for r in analysis.references] == ["hero"]


def test_reads_in_included_files_and_imported_macros_name_their_file(
        engine: TemplateEngine, tmp_path: Path) -> None:
    """Checked like the template's own reads, and reported where they are written."""
    prompts = tmp_path / "pipes" / "prompts"
    (prompts / "macros.j2").write_text(
        "{% macro pick() %}\n{{ steps.shot.outputs | selectattr('key') | list }}"
        "{{ matrix.bg }}{% endmacro %}", encoding="utf-8")
    (prompts / "item.j2").write_text("\n\n{{ item.output.images[0].url }}",
                                     encoding="utf-8")
    uses = engine.analyse('x {% include "prompts/uses.j2" %}')
    assert uses.references == (Reference("hero", "output", ("images", 0, "url"), 1,
                                         file=str(prompts / "uses.j2")),)
    macro = engine.analyse('{% from "prompts/macros.j2" import pick with context %}'
                           "{{ pick() }}")
    assert [(r.step, r.kind, r.line, r.file) for r in macro.references] == [
        ("shot", "outputs", 2, str(prompts / "macros.j2"))]
    assert [(r.via, r.path, r.line, r.file) for r in macro.item_reads] == [
        ("selectattr", ("key",), 2, str(prompts / "macros.j2"))]
    item = engine.analyse('{% include "prompts/item.j2" %}')
    assert [(p.path, p.line, p.file) for p in item.item_paths] == [
        (("output", "images", 0, "url"), 3, str(prompts / "item.j2"))]


def test_an_import_without_context_says_how_to_give_it_the_names(engine: TemplateEngine,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "pipes" / "prompts" / "m.j2").write_text(
        "{% macro url() %}{{ steps.hero.output }}{% endmacro %}", encoding="utf-8")
    failed = _fails(engine, '{% from "prompts/m.j2" import url %}{{ url() }}',
                    {"steps": {"hero": {"output": 1}}})
    assert failed.message == "undefined name 'steps'"
    assert failed.hint is not None and "'with context'" in failed.hint
    assert engine.render('{% from "prompts/m.j2" import url with context %}{{ url() }}',
                         {"steps": {"hero": {"output": 1}}}) == "1"


def test_bare_steps_use_is_flagged(engine: TemplateEngine) -> None:
    assert engine.analyse("a\n{{ steps | length }}").bad_steps_use == 2
    assert engine.analyse("{{ steps.hero }}").references == (Reference("hero", None, (), 1),)


def test_syntax_errors(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateFailed, match="template syntax error") as info:
        engine.analyse("ok\n{{ unclosed ")
    assert info.value.line == 2


def test_pending_values_propagate_with_readable_names(engine: TemplateEngine) -> None:
    context = {"steps": {"hero": {"output": Pending("steps.hero.output")}},
               "item": Pending("item")}
    value = engine.render("{{ steps.hero.output.images[0].url }}", context)
    assert value == Pending("steps.hero.output.images[0].url")
    text = engine.render("see {{ item.url }}", context)
    assert text == "see <pending: item.url>"
    assert is_pending(value) and is_pending(text) and not is_pending("plain")
    assert str(Pending("x")["k"]) == "<pending: x['k']>"
    # An expression that cannot run on a placeholder stays pending instead of failing.
    assert is_pending(engine.render("{{ item.n + 1 }}", context))


def test_iterating_a_pending_value_stays_pending(engine: TemplateEngine) -> None:
    # Iteration once fell back to __getitem__(0), (1), ... and never ended.
    context = {"steps": {"say": {"outputs": Pending("steps.say.outputs")}}}
    for source in ("{{ steps.say.outputs | map(attribute='message') | join(', ') }}",
                   "{% for o in steps.say.outputs %}{{ o.message }}{% endfor %}",
                   "{{ 'x' in steps.say.outputs }}", "{{ steps.say.outputs | list }}"):
        assert is_pending(engine.render(source, context)), source


def test_is_template_and_walk_strings() -> None:
    assert is_template("{{ x }}") and is_template("{% if %}") and is_template("{# c #}")
    assert not is_template("plain { braces }")
    found = sorted(walk_strings({"a": ["x", {"{{ k }}": 1}], "b": 2}), key=str)
    assert found == sorted([(("a", 0), "x", False), (("a", 1, "{{ k }}"), "{{ k }}", True)],
                           key=str)


def test_globals_are_not_free_names_with_or_without_bindings(engine: TemplateEngine) -> None:
    # validate reported `range` as an undefined variable unless the template bound a name.
    assert engine.analyse("{{ range(3) | list }}").names == frozenset()
    assert engine.analyse("{% set x = 3 %}{{ range(x) | list }}").names == frozenset()
    assert engine.analyse("{{ lipsum(3) }}").names == {"lipsum"}  # removed from the sandbox


# Text with lookups ("shot {{ matrix.seed }}") is rendered without Jinja's runtime: it must
# read exactly as Jinja writes it, and hand every other case back to Jinja.
_TEXT_AND_LOOKUPS = ["a {{ x }}", "{{ x }} and {{ y.z }}!", "line\n{{ x }}\n",
                     "{{- x -}} !", "{{ y['z'] }}-{{ x }}\r\nend", "{# note #}a {{ x }}"]


class _Loud(str):
    def __str__(self) -> str:
        return self.upper()


_VALUES: list[Any] = ["fox", "ünï\u202e", "", 0, -5, 10**30, True, None, 1.5, [1, "a"],
                      {"k": 1}, _Loud("fox")]


@pytest.mark.parametrize("source", _TEXT_AND_LOOKUPS)
@pytest.mark.parametrize("value", _VALUES, ids=repr)
def test_text_and_lookups_read_as_jinja_writes_them(engine: TemplateEngine, source: str,
                                                    value: Any) -> None:
    context = {"x": value, "y": {"z": value}}
    with engine.env.metered():
        expected = engine.env.from_string(source).render(context)
    assert engine.render(source, context) == expected


def _said(failed: TemplateFailed) -> tuple[str, int, str | None]:
    return failed.message, failed.line, failed.hint


def test_text_and_lookups_fail_and_wait_as_jinja_does(engine: TemplateEngine) -> None:
    # The same template with a constant in it takes Jinja's path: the words must match.
    for source, context in [("a\n{{ nope }}", {}), ("a {{ x.__class__ }}", {"x": 1}),
                            ("{{ x.y }} b", {"x": {}}), ("{{ x }}!", {"x": 10**5000})]:
        assert _said(_fails(engine, source, context)) == \
            _said(_fails(engine, source + "{{ '' }}", context)), source
    assert is_pending(engine.render("a {{ x.y }}", {"x": Pending("steps.s.output")}))
    small = TemplateEngine(None, limits=Limits(max_output=10))
    assert _said(_fails(small, "{{ x }}\n{{ x }}", {"x": "123456"})) == \
        _said(_fails(small, "{{ x }}\n{{ x }}{{ '' }}", {"x": "123456"}))
    assert small.render("{{ x }}{{ x }}", {"x": "12345"}) == "1234512345"
