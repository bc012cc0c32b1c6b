"""Promise: only a genuine placeholder is pending; every other template error is reported.

A render is pending only when it needed the value of a `Pending` (an output not
produced yet, a foreach item, the run id). Errors that have nothing to do with a
placeholder used to be swallowed whenever the context held one anywhere.
"""

from __future__ import annotations

from typing import Any

import pytest

from civflow.template import Pending, TemplateEngine, TemplateFailed, is_pending


def _context(**known: Any) -> dict[str, Any]:
    """What validate renders with: every step's outputs and the run id are pending."""
    return {"steps": {"x": {"output": Pending("steps.x.output"),
                            "outputs": Pending("steps.x.outputs")}},
            "run": {"id": Pending("run.id")}, "item": Pending("item"), **known}


@pytest.mark.parametrize("source,words", [
    ("{{ 1/0 }}", "ZeroDivisionError"),
    ("a {{ 1/0 }} b", "ZeroDivisionError"),
    ("{{ 'a' > 1 }}", "not supported between instances of 'str' and 'int'"),
    ("{{ subject > 3 }}", "not supported between instances of 'str' and 'int'"),
    ("{{ 'x' | int + subject }}", "TypeError"),
    ("{{ subject.split(1) }}", "TypeError"),
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(item) }}", "nested more than"),
    ("{% macro f(x) %}{{ 1/0 }}{% endmacro %}{{ f(item) }}", "ZeroDivisionError"),
])
def test_errors_not_caused_by_a_placeholder_are_not_pending(source: str, words: str) -> None:
    with pytest.raises(TemplateFailed) as info:
        TemplateEngine(None).render(source, _context(subject="a fox"))
    assert words in info.value.message


@pytest.mark.parametrize("source", [
    "{{ steps.x.output.images }}",
    "{% for i in steps.x.output.images %}{{ i.url }}{% endfor %}",
    "{{ steps.x.output.n > 3 }}",
    "{{ 3 < steps.x.output.n }}",
    "{{ item.n + 1 }}",
    "{{ item.n * 2 }}",
    "{{ item | int }}",
    "{{ item | tojson }}",
    "{{ item | first }}",
    "{{ steps.x.outputs | length }}",
    "{{ steps.x.outputs | map(attribute='url') | join(', ') }}",
    "{% if item %}a{% endif %}",
    "{{ item.url.upper() }}",
    "{{ item is number }}",
    "{{ range(item) | list }}",
    "{{ '{:>5}'.format(item) }}",
    "{{ 'x' in steps.x.outputs }}",
])
def test_operations_on_a_placeholder_stay_pending(source: str) -> None:
    assert is_pending(TemplateEngine(None).render(source, _context()))


def test_text_around_a_placeholder_keeps_its_mark() -> None:
    engine = TemplateEngine(None)
    assert engine.render("see {{ item.url }}", _context()) == "see <pending: item.url>"
    assert engine.render("{{ item is defined }}", _context()) is True


def test_a_when_comparing_known_outputs_of_the_wrong_type_fails_at_run_time() -> None:
    # Once outputs are known, a `when:` that compares a string output to an int is an
    # error of the pipeline, even though other steps (and the run id) are still pending.
    context = _context()
    context["steps"]["check"] = {"output": {"score": "7"}}
    with pytest.raises(TemplateFailed, match="not supported between instances"):
        TemplateEngine(None).render("{{ steps.check.output.score > 5 }}", context)
    context["steps"]["check"] = {"output": {"score": 7}}
    assert TemplateEngine(None).render("{{ steps.check.output.score > 5 }}", context) is True


def test_python_equality_of_placeholders_is_unchanged() -> None:
    # Rendered inputs are compared in plain Python; that must not become "unknown".
    assert Pending("a") == Pending("a") and Pending("a") != Pending("b")
    assert {"k": Pending("a")} == {"k": Pending("a")}
    assert len({Pending("a"), Pending("a")}) == 1
