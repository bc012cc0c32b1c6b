"""Promise: no template can hang or exhaust memory; every bound is a located TemplateFailed.

Each case here used to run for minutes or allocate gigabytes. The assertions are on
the error, never on elapsed time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from civflow.template import Limits, Pending, TemplateEngine, TemplateFailed

BIG = "a" * 3_000_000
CONTEXT: dict[str, Any] = {"big": BIG, "run": {"id": Pending("run.id")}}


def _failure(source: str, engine: TemplateEngine | None = None) -> TemplateFailed:
    with pytest.raises(TemplateFailed) as info:
        (engine or TemplateEngine(None)).render(source, CONTEXT)
    return info.value


@pytest.mark.parametrize("source,words", [
    # arithmetic
    ("{{ 9 ** (9 ** 10) }}", "more than 4,096 bits"),
    ("{% set ns = namespace(x=3) %}{% for i in range(60) %}{% set ns.x = ns.x * ns.x %}"
     "{% endfor %}", "more than 4,096 bits"),
    # repetition
    ('{{ "a" * 3000000000 }}', "3,000,000,000 characters or items"),
    ("{{ [0] * 10**9 }}", "1,000,000,000 characters or items"),
    ("{{ 3000000000 * 'a' }}", "3,000,000,000 characters or items"),
    # loops and ranges
    ("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
     "more than 100,000 loop iterations"),
    ("{{ range(10**12) | list }}", "range() of more than 100,000 numbers"),
    ("{% for x in range(3) recursive %}{{ loop(range(3)) }}{% endfor %}",
     "nested more than 40 deep"),
    # growth by concatenation, join, format and filters
    ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}", "characters or items"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}"
     "{% endfor %}", "characters or items"),
    ("{{ ([big] * 1000) | join }}", "characters or items"),
    ("{{ '-'.join([big] * 1000) }}", "characters or items"),
    ("{{ 'x' | center(3000000000) }}", "characters or items"),
    ("{{ 'ab'.ljust(10**10) }}", "characters or items"),
    ("{{ big | replace('a', 'aaaa') }}", "characters or items"),
    ("{{ ('%s' * 1000) % ((big,) * 1000) }}", "characters or items"),
    ("{{ '%0999999999d' | format(1) }}", "format width or precision is over 4,096"),
    ("{{ '{:>999999999}'.format(1) }}", "format width or precision is over 4,096"),
    ("{{ '{0}{0}{0}{0}{0}{0}{0}{0}'.format(big) }}", "characters or items"),
    ("{{ range(100) | batch(10**9, 0) | list }}", "characters or items"),
    # recursion
    ("{% macro f(n) %}{{ f(n + 1) }}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
     "nested more than 40 deep"),
    # output
    ("{% for i in range(2000) %}{{ big[:3000] }}{% endfor %}", "wrote more than"),
])
def test_a_template_over_a_bound_fails_with_a_hint(source: str, words: str) -> None:
    failed = _failure(source)
    assert failed.message.startswith("template limit: ")
    assert words in failed.message
    assert failed.hint
    assert failed.line == 1


def test_the_failure_points_at_the_template_line() -> None:
    failed = _failure("first\nsecond\n{{ 'a' * 10**10 }}")
    assert failed.line == 3


def test_loops_share_one_budget_per_render_not_per_loop() -> None:
    engine = TemplateEngine(None, limits=Limits(max_iterations=10))
    assert engine.render("{% for i in range(10) %}{% endfor %}", {}) == ""
    with pytest.raises(TemplateFailed, match="more than 10 loop iterations"):
        engine.render("{% for i in range(6) %}{% endfor %}{% for i in range(6) %}{% endfor %}",
                      {})
    # The budget is per render: the same template renders again.
    assert engine.render("{% for i in range(10) %}{% endfor %}", {}) == ""


def test_a_render_past_its_deadline_fails() -> None:
    # A deadline already passed: the first cooperative check trips, whatever the clock says.
    engine = TemplateEngine(None, limits=Limits(render_seconds=-1))
    with pytest.raises(TemplateFailed, match="ran longer than -1 seconds") as info:
        engine.render("{% for i in range(3) %}{{ i }}{% endfor %}", {})
    assert info.value.hint


def test_recursive_includes_fail_cleanly(tmp_path: Path) -> None:
    (tmp_path / "self.j2").write_text('x{% include "self.j2" %}', encoding="utf-8")
    failed = _failure('{% include "self.j2" %}', TemplateEngine(tmp_path))
    assert failed.message.startswith(("template limit: ", "template error: recursion"))
    assert failed.hint


def test_an_include_that_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.j2")
    failed = _failure('{% include "pipe.j2" %}', TemplateEngine(tmp_path))
    assert failed.message == "included template 'pipe.j2' is not a regular file"
    with pytest.raises(TemplateFailed, match="not a regular file"):
        TemplateEngine(tmp_path).analyse('{% include "pipe.j2" %}')


def test_a_huge_include_is_refused_before_reading(tmp_path: Path) -> None:
    with (tmp_path / "huge.j2").open("wb") as handle:
        handle.truncate(2 * 2**20)  # sparse: no disk space used
    failed = _failure('{% include "huge.j2" %}', TemplateEngine(tmp_path))
    assert failed.message == "included template 'huge.j2' is larger than 1,048,576 bytes"


def test_deeply_nested_syntax_is_an_error_not_a_crash() -> None:
    engine = TemplateEngine(None)
    source = "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}"
    with pytest.raises(TemplateFailed):
        engine.analyse(source)
    with pytest.raises(TemplateFailed):
        engine.render(source, {})


@pytest.mark.parametrize("source,expected", [
    ("{{ 2 ** 64 }}", 2**64),
    ("{{ 'ab' * 3 }}", "ababab"),
    ("{{ [1, 2] + [3] }}", [1, 2, 3]),
    ("{{ range(5) | list }}", [0, 1, 2, 3, 4]),
    ("{{ 'seed {}'.format(123456789) }}", "seed 123456789"),
    ("{{ '%s-%05d' % ('a', 7) }}", "a-00007"),
    ("{{ 'a,b' | replace(',', ';') }}", "a;b"),
    ("{{ ['x', 'y'] | join(', ') }}", "x, y"),
    ("{{ 'x' | center(5) }}", "  x  "),
    ("{{ 1 < 2 < 3 }}", True),
    ("{{ 3 > 2 > 2 }}", False),
    ("{{ 'a' in 'abc' }}", True),
    ("{% macro twice(x) %}{{ x }}{{ x }}{% endmacro %}{{ twice('a') }}", "aa"),
])
def test_ordinary_templates_are_unaffected(source: str, expected: Any) -> None:
    assert TemplateEngine(None).render(source, {}) == expected


def test_lipsum_is_not_available() -> None:
    assert _failure("{{ lipsum(10**6) }}").message == "undefined name 'lipsum'"
