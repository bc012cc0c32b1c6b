"""The editor schema knows the fields, and never marks a valid pipeline wrong.

Promises guarded here:
- the shipped file is what the current pipeline schema and catalog make (regenerate with
  scripts/gen_editor_schema.py), and it is a valid draft-07 schema (what editors read);
- every shipped pipeline and every whole pipeline in the docs validates against it, and so
  does every catalogued variant's example input: the editor is never stricter than the
  catalog;
- a misspelt type, an unknown engine, an unknown field and an out-of-range value are each
  an error at their own place, in one step or spread over several;
- per type and engine: each enum and maximum of the catalog is an error in the editor too;
- templates are allowed wherever a value can be templated (values, whole lists, mapping
  keys, `{% include %}`), discriminators may come from `defaults:`, and an `unchecked` step
  is not checked;
- every field has a description (hover text) written by civflow, never the OpenAPI
  document's prose; `civflow schema` prints the file and `--output` writes it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from civflow import catalog
from civflow.scaffold import build_editor_schema, editor_schema, editor_schema_text
from civflow.scaffold.editor import dumps
from tests.openapi_support import load_openapi, skip_without_openapi
from tests.test_docs import yaml_blocks

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "pipelines").glob("*.yaml"))
DOC_PIPELINES = [b for b in yaml_blocks() if not b.is_snippet]


@cache
def validator() -> Draft7Validator:
    return Draft7Validator(editor_schema())


def errors(data: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(path, message) of every error, the deepest first where anyOf/if-then nest them."""
    return sorted(((tuple(e.absolute_path), e.message) for e in validator().iter_errors(data)),
                  key=lambda pm: [str(p) for p in pm[0]])


def paths(data: Any) -> set[tuple[Any, ...]]:
    return {p for p, _ in errors(data)}


def pipeline(**steps: dict[str, Any]) -> dict[str, Any]:
    return {"version": 1, "name": "t", "steps": steps}


SDXL = {"engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage",
        "model": "urn:air:sdxl:checkpoint:civitai:101055@128078", "prompt": "a fox"}


def test_shipped_schema_is_current() -> None:
    """The committed file is a fresh generation (scripts/gen_editor_schema.py --check)."""
    assert editor_schema_text() == dumps(build_editor_schema()), \
        "run: python scripts/gen_editor_schema.py"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_editor_schema.py"),
                           "--check"], text=True, capture_output=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_schema_is_valid_draft_07() -> None:
    """Editors read draft-07: the file is one, and names it."""
    schema = editor_schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    Draft7Validator.check_schema(schema)
    text = editor_schema_text()
    assert "$defs" not in text and "dependentRequired" not in text
    assert "(?P<" not in text  # Python-only regex syntax; editors use JavaScript's


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_pipelines_validate(path: Path) -> None:
    assert errors(yaml.safe_load(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("block", DOC_PIPELINES, ids=lambda b: b.where)
def test_docs_pipelines_validate(block: Any) -> None:
    data = yaml.safe_load(block.body)
    if not (isinstance(data, dict) and "steps" in data):
        pytest.skip("not a pipeline (a vars file or similar)")
    assert errors(data) == []


def test_every_catalogued_example_validates() -> None:
    """No input the catalog accepts is an editor error: every variant's example, with
    its optional extras, as a step's input."""
    for variant in catalog.catalogued_variants():
        if variant.schema.get("type") != "object":
            continue
        body = {**variant.example, **variant.extras}
        assert catalog.check_input(variant.step_type, body) == [], variant.label
        assert errors(pipeline(s={"type": variant.step_type, "input": body})) == [], \
            variant.label


ISSUE_15 = """
version: 1
name: typos
steps:
  hero:
    type: imageGenn
    input:
      engine: sdxl
      prompt: a fox
      negative_prompt: blurry
      steps: 500
"""


def test_the_four_mistakes_of_issue_15_in_one_step() -> None:
    """`type: imageGenn`, `engine: sdxl`, `negative_prompt`, `steps: 500`: four errors,
    each at its own place (a typo of a known type is checked as that type)."""
    found = errors(yaml.safe_load(ISSUE_15))
    where = {p for p, _ in found}
    assert ("steps", "hero", "type") in where
    assert ("steps", "hero", "input", "engine") in where
    assert ("steps", "hero", "input", "steps") in where
    unknown = [m for p, m in found if p == ("steps", "hero", "input")]
    assert len(unknown) == 1 and "'negative_prompt'" in unknown[0]
    assert len(found) == 4, found


def test_the_four_mistakes_spread_over_steps() -> None:
    """The same mistakes in steps whose type is right: the variant's fields apply when
    the step names it in full, every field of the type when it does not."""
    data = pipeline(
        a={"type": "imageGenn", "input": {**SDXL}},
        b={"type": "imageGen", "input": {**SDXL, "engine": "sdxl"}},
        c={"type": "imageGen", "input": {**SDXL, "negative_prompt": "blurry"}},
        d={"type": "imageGen", "input": {**SDXL, "steps": 500}},
        e={"type": "imageGen", "input": {"prompt": "x", "steps": 500}},  # from defaults
    )
    assert paths(data) == {("steps", "a", "type"), ("steps", "b", "input", "engine"),
                           ("steps", "c", "input"), ("steps", "d", "input", "steps"),
                           ("steps", "e", "input", "steps")}


def _enum_and_max_fields(variant: catalog.Variant) -> list[tuple[str, Any]]:
    """(field, a value the catalog refuses) for each top-level enum or maximum."""
    out: list[tuple[str, Any]] = []
    for name, node in (variant.schema.get("properties") or {}).items():
        if not isinstance(node, dict) or name in variant.discriminators:
            continue
        if "enum" in node and all(isinstance(v, str | type(None)) for v in node["enum"]):
            out.append((name, "no-such-value"))
        elif isinstance(node.get("maximum"), int | float) and "integer" in str(node["type"]):
            out.append((name, int(node["maximum"]) + 1))
        elif isinstance(node.get("maximum"), int | float):
            out.append((name, node["maximum"] + 1))
    return out


def test_enums_and_bounds_per_variant_match_the_catalog() -> None:
    """For every hand-written variant and a seeded sample of the document's: a value
    outside an enum or above a maximum is refused by the catalog and by the editor, at
    that field."""
    variants = [v for v in catalog.catalogued_variants() if v.schema.get("type") == "object"]
    written = catalog.input_variants()
    rng = random.Random(15)
    sample = written + rng.sample([v for v in variants if v not in written], 40)
    checked = 0
    for variant in sample:
        for name, bad in _enum_and_max_fields(variant):
            body = {**variant.example, name: bad}
            refused = {i.path for i in catalog.check_input(variant.step_type, body)}
            if (name,) not in refused:
                continue  # the catalog itself takes it (e.g. a nullable field)
            got = paths(pipeline(s={"type": variant.step_type, "input": body}))
            assert ("steps", "s", "input", name) in got, (variant.label, name, bad)
            checked += 1
    assert checked > 100


def test_templates_are_allowed_wherever_a_value_can_be_templated() -> None:
    """Native-typed expressions, whole lists, templated keys, statements, templated
    discriminators and `defaults:` supplying the variant: no editor error."""
    data = yaml.safe_load("""
version: 1
name: templated
vars: {n: 30, eng: sdcpp}
defaults:
  imageGen: {engine: sdcpp, ecosystem: sdxl, operation: createImage,
             model: "urn:air:sdxl:checkpoint:civitai:101055@128078"}
steps:
  a:
    type: imageGen
    matrix: {seed: [1, 2], strength: [0.5]}
    input:
      prompt: '{% include "prompts/p.j2" %}'
      seed: "{{ matrix.seed }}"
      steps: "{{ n }}"
      width: "{{ 1024 }}"
      outputFormat: "{{ 'png' }}"
      loras: {"{{ lora }}": "{{ matrix.strength }}"}
  b:
    type: imageGen
    input:
      engine: "{{ eng }}"
      ecosystem: sdxl
      operation: createImage
      model: "urn:air:sdxl:checkpoint:civitai:{{ id }}"
      prompt: x
  c:
    type: convertImage
    foreach: "{{ steps.a.outputs }}"
    input:
      image: "{{ item.images[0].url }}"
      transforms: "{{ vars_transforms }}"
      output: {format: webp, hideMetadata: true}
  d:
    type: videoGen
    input:
      engine: wan
      version: v2.6
      provider: fal
      operation: image-to-video
      prompt: push in
      cfgScale: 4
      images: ["{{ steps.a.outputs[0].images[0].url }}"]
""")
    assert errors(data) == []


def test_required_fields_may_come_from_defaults() -> None:
    """`model` and `prompt` are required by the API, but `defaults:` may supply them."""
    data = pipeline(s={"type": "imageGen", "input": {"engine": "sdcpp", "ecosystem": "sdxl",
                                                     "operation": "createImage"}})
    assert errors(data) == []


def test_an_unchecked_step_is_not_checked() -> None:
    """`unchecked: true` sends the input as written: any type, any field."""
    data = pipeline(s={"type": "brandNewStep", "unchecked": True,
                       "input": {"whatever": 1, "steps": 9999}})
    assert errors(data) == []
    data = pipeline(s={"type": "imageGen", "unchecked": True,
                       "input": {**SDXL, "newField": True}})
    assert errors(data) == []


def test_a_comfy_step_from_a_workflow_file() -> None:
    """civflow's own form of a comfy step (workflow file + titles) is known; an unknown
    key beside it is not."""
    good = pipeline(s={"type": "comfy", "input": {"workflow": "w.json", "quantity": 2,
                                                  "set": {"KSampler": {"seed": 1}}}})
    assert errors(good) == []
    bad = pipeline(s={"type": "comfy", "input": {"workflow": "w.json", "sett": {}}})
    assert paths(bad) == {("steps", "s", "input")}


def test_every_field_is_described_in_civflows_words() -> None:
    """Hover text: every field of every input has a description; none is the OpenAPI
    document's prose."""
    schema = editor_schema()
    fields = {k: v for k, v in schema["definitions"].items() if k.startswith("field.")}
    assert fields
    for key, node in fields.items():
        assert node.get("description"), key
    described = {k: v["description"] for k, v in fields.items()}
    assert "Sampling steps" in described[next(k for k in described
                                              if k.startswith("field.steps."))]
    skip_without_openapi()
    prose: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in ("description", "summary", "title"):
                if isinstance(node.get(key), str) and len(node[key].split()) > 3:
                    prose.add(node[key].strip())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(load_openapi())
    text = editor_schema_text()
    copied = [p for p in prose if json.dumps(p)[1:-1] in text]
    assert copied == []


def test_civflow_schema_prints_and_writes_the_file(tmp_path: Path) -> None:
    """`civflow schema` prints the shipped file; `--output FILE` writes it."""
    command = [sys.executable, "-m", "civflow", "schema"]
    done = subprocess.run(command, text=True, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == editor_schema_text()
    target = tmp_path / "nested" / "civflow.json"
    done = subprocess.run([*command, "--output", str(target)], text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert target.read_text(encoding="utf-8") == editor_schema_text()


def _patterns(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            found.add(node["pattern"])
        found.update(k for k in node.get("patternProperties", {}) if isinstance(k, str))
        for value in node.values():
            found |= _patterns(value)
    elif isinstance(node, list):
        for value in node:
            found |= _patterns(value)
    return found


JS_CHECK = """
const patterns = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const bad = [];
for (const p of patterns) { try { new RegExp(p, 'u'); } catch (e) { bad.push(p + ': ' + e); } }
const air = new RegExp(patterns.find(p => p.startsWith('^(?:urn:)?')), 'u');
process.stdout.write(JSON.stringify({bad, air: air.test(
  'urn:air:sdxl:checkpoint:civitai:101055@128078'), tmpl: new RegExp('\\\\{\\\\{|\\\\{%', 'u')
  .test('{{ x }}')}));
"""


def test_every_pattern_is_a_javascript_regex() -> None:
    """Editors run the schema's patterns as JavaScript regular expressions (with the u
    flag): every one compiles there, and the AIR and template patterns match as here."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the patterns are checked with Python only")
    patterns = sorted(_patterns(editor_schema()))
    assert len(patterns) > 40
    assert any(p.startswith("^(?:urn:)?") for p in patterns)
    done = subprocess.run([node, "-e", JS_CHECK], input=json.dumps(patterns), text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {"bad": [], "air": True, "tmpl": True}
