"""The pipeline JSON Schema, and how its failures are put into words at the offending node."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from civflow.errors import Diagnostic
from civflow.loading.schema import pipeline_schema, schema_diagnostics
from civflow.loading.yamlsrc import load_yaml

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden"
# Golden cases whose mistake is in the schema's own territory (not YAML syntax, templates,
# references or the catalog): the plain JSON Schema must reject each of them.
SCHEMA_BROKEN = [
    "misspelt-top-key", "misspelt-step-key", "missing-input", "missing-steps",
    "version-two", "bad-pipeline-name", "bad-step-name", "steps-empty", "needs-not-list",
    "matrix-and-foreach", "matrix-empty-list", "bad-timeout", "retries-string",
    "priority-urgent", "reserved-var", "too-many-tags", "callback-http", "input-list",
    "when-number",
]

MINIMAL = "version: 1\nname: p\nsteps:\n  a:\n    type: echo\n    input: {}\n"


def _diags(text: str) -> list[Diagnostic]:
    return schema_diagnostics(load_yaml(text, "p.yaml"))


def _one(text: str) -> Diagnostic:
    found = _diags(text)
    assert len(found) == 1, [d.render() for d in found]
    return found[0]


def test_schema_is_itself_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(pipeline_schema())


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_schema_accepts_every_example_pipeline(path: Path) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    jsonschema.validate(data, pipeline_schema())


@pytest.mark.parametrize("name", SCHEMA_BROKEN)
def test_schema_rejects_each_broken_golden(name: str) -> None:
    data: Any = yaml.safe_load((GOLDEN / f"{name}.yaml").read_text(encoding="utf-8"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, pipeline_schema())


def test_schema_file_is_the_one_in_the_checkout() -> None:
    on_disk = json.loads((ROOT / "schemas" / "pipeline.schema.json").read_text("utf-8"))
    assert pipeline_schema() == on_disk


def test_minimal_pipeline_has_no_diagnostics() -> None:
    assert _diags(MINIMAL) == []


def test_unknown_key_gets_did_you_mean_at_the_key() -> None:
    d = _one(MINIMAL.replace("    input: {}", "    input: {}\n    retires: 2"))
    assert d.message == "unknown key 'retires' in 'steps.a'"
    assert d.hint == "did you mean 'retries'?"
    assert d.location is not None and (d.location.line, d.location.col) == (7, 5)
    assert d.source_line == "    retires: 2"


def test_misspelt_required_key_is_reported_once() -> None:
    d = _one(MINIMAL.replace("name: p", "nmae: p"))
    assert d.message == "unknown key 'nmae' in the top level"
    assert d.hint == "did you mean 'name'?"


def test_unknown_key_without_a_close_match_lists_the_known_ones() -> None:
    d = _one(MINIMAL + "colour: red\n")
    assert d.hint is not None and d.hint.startswith("known keys here: batch, defaults, description")


def test_missing_required_key_has_a_hint() -> None:
    d = _one(MINIMAL.replace("    input: {}\n", ""))
    assert d.message == "'steps.a' is missing the required key 'input'"
    assert d.hint is not None and "input: {}" in d.hint
    assert d.location is not None and d.location.line == 4


def test_wrong_type_is_worded() -> None:
    d = _one(MINIMAL.replace("    input: {}", "    input: {}\n    needs: hero"))
    assert d.message == "'steps.a.needs' must be a list, not a string"
    assert d.location is not None and (d.location.line, d.location.col) == (7, 12)


def test_enum_gets_did_you_mean() -> None:
    d = _one(MINIMAL.replace("    input: {}", "    input: {}\n    priority: hihg"))
    assert d.message == ('\'steps.a.priority\' must be one of: "low", "normal", "high"; '
                         'got "hihg"')
    assert d.hint == "did you mean 'high'?"


def test_pattern_is_explained_in_words() -> None:
    d = _one(MINIMAL.replace("name: p", "name: My Pipeline"))
    assert d.message == ("'name' \"My Pipeline\" is not valid: expected lowercase letters, "
                         "digits, '-' and '_', starting with a letter or digit, at most 64")


def test_bad_step_name_suggests_one() -> None:
    d = _one(MINIMAL.replace("  a:", "  Hero-Shot:"))
    assert d.message == ("step name 'Hero-Shot' is not valid: expected lowercase letters, "
                         "digits and '_', starting with a letter, at most 64")
    assert d.hint == "for example 'hero_shot'"
    assert d.location is not None and (d.location.line, d.location.col) == (4, 3)


def test_reserved_variable_name() -> None:
    d = _one(MINIMAL + "vars:\n  steps: 3\n")
    assert d.message == "'steps' is a reserved name and cannot be a variable"
    assert d.location is not None and d.location.line == 8


def test_matrix_with_foreach_is_one_clear_error() -> None:
    d = _one(MINIMAL.replace("    input: {}", "    input: {}\n    matrix: {x: [1]}\n"
                             "    foreach: '{{ [1] }}'"))
    assert d.message == "step 'a' has both 'matrix' and 'foreach'"
    assert d.location is not None and d.location.line == 8


def test_diagnostics_come_in_file_order_and_never_dump_jsonschema() -> None:
    text = ("version: 2\nname: p\nsteps:\n  a:\n    type: echo\n    input: {}\n"
            "    retries: -1\n  b:\n    type: 3\n    input: []\n")
    found = _diags(text)
    lines = [d.location.line for d in found if d.location]
    assert lines == sorted(lines)
    assert len(found) == 4
    for d in found:
        assert "Failed validating" not in d.message
        assert "{'" not in d.message  # no Python reprs of schema fragments
