"""The step DAG: references and needs become edges, cycles are named, instances expand."""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.check.graph import build_graph
from civflow.check.render import (
    base_context,
    matrix_instances,
    pending_step_view,
    render_tree,
    resolve_pending,
    template_location,
)
from civflow.errors import PipelineInvalid
from civflow.loading import PipelineSpec, load_pipeline
from civflow.template import Pending, TemplateEngine


def _spec(tmp_path: Path, steps: str, head: str = "vars:\n  subject: fox\n") -> PipelineSpec:
    path = tmp_path / "p.yaml"
    path.write_text(f"version: 1\nname: p\n{head}steps:\n{steps}", encoding="utf-8")
    return load_pipeline(path)


def _graph_error(spec: PipelineSpec) -> str:
    with pytest.raises(PipelineInvalid) as info:
        build_graph(spec, TemplateEngine(spec.base_dir))
    return info.value.render()


CHAIN = """\
  clip:
    type: videoGen
    input: {images: ["{{ steps.up.outputs[0].blob.url }}"]}
  hero:
    type: imageGen
    input: {prompt: "{{ subject }}"}
  up:
    type: imageUpscaler
    foreach: "{{ steps.hero.output.images }}"
    input: {image: "{{ item.url }}"}
  side:
    type: echo
    needs: [hero]
    input: {}
  alone:
    type: echo
    input: {x: "{{ steps['hero'].output.images[0].url }}"}
"""


def test_edges_from_references_and_needs(tmp_path: Path) -> None:
    spec = _spec(tmp_path, CHAIN)
    graph = build_graph(spec, TemplateEngine(spec.base_dir))
    assert sorted(graph.graph.edges) == [("hero", "alone"), ("hero", "side"), ("hero", "up"),
                                         ("up", "clip")]
    # Topological, with ties broken by the order of the file.
    assert graph.order == ("hero", "up", "clip", "side", "alone")
    assert graph.upstream("clip") == ("up",)
    assert graph.downstream_closure({"up"}) == {"up", "clip"}
    assert graph.upstream_closure({"clip"}) == {"clip", "up", "hero"}
    (foreach_ref,) = graph.refs["up"]
    assert str(foreach_ref.ref) == "steps.hero.output.images"
    assert (foreach_ref.location.line, foreach_ref.location.col) == (14, 14)


def test_unknown_steps_are_not_edges(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "  a:\n    type: echo\n    input: {x: '{{ steps.zzz.output }}'}\n")
    graph = build_graph(spec, TemplateEngine(spec.base_dir))
    assert list(graph.graph.edges) == []
    assert graph.refs["a"][0].ref.step == "zzz"


def test_cycle_names_the_steps_from_the_first_in_the_file(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """\
  intro:
    type: echo
    input: {}
  a:
    type: echo
    needs: [c]
    input: {}
  b:
    type: echo
    input: {x: "{{ steps.a.output }}"}
  c:
    type: echo
    input: {x: "{{ steps.b.output }}"}
""")
    text = _graph_error(spec)
    assert text.startswith(f"{spec.path}:9:3: the steps form a cycle: a -> b -> c -> a\n")
    assert "hint: a step cannot depend on itself" in text


def test_template_syntax_error_is_located_in_a_block_scalar(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """\
  a:
    type: echo
    input:
      prompt: |
        first line
        second {{ subject
""")
    text = _graph_error(spec)
    assert text.startswith(f"{spec.path}:11:9: template syntax error")
    assert "        second {{ subject" in text


def test_template_location_maps_lines(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """\
  a:
    type: echo
    input:
      one: "{{ x }}"
      block: |
        l1
        l2
""")
    one = ("steps", "a", "input", "one")
    block = ("steps", "a", "input", "block")
    assert (template_location(spec, one, 1).line, template_location(spec, one, 1).col) == (9, 12)
    assert template_location(spec, block, 1).line == 11
    assert template_location(spec, block, 2).line == 12


def test_matrix_instances_are_named_in_the_order_written(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """\
  sweep:
    type: echo
    matrix:
      strength: [0.5, 1.0]
      sampler: [euler, "dpm 2"]
      opts: [{a: 1}]
    input: {}
  single:
    type: echo
    input: {}
""")
    names = [name for name, _ in matrix_instances(spec.steps["sweep"])]
    assert names == [
        'sweep[strength=0.5,sampler=euler,opts={"a": 1}]',
        'sweep[strength=0.5,sampler=dpm 2,opts={"a": 1}]',
        'sweep[strength=1.0,sampler=euler,opts={"a": 1}]',
        'sweep[strength=1.0,sampler=dpm 2,opts={"a": 1}]',
    ]
    assert matrix_instances(spec.steps["sweep"])[1][1] == {"strength": 0.5, "sampler": "dpm 2",
                                                         "opts": {"a": 1}}
    assert matrix_instances(spec.steps["single"]) == [("single", {})]


def test_instance_names_write_each_value_as_json_does(tmp_path: Path) -> None:
    # Names are lockfile keys: whole numbers, booleans, null and lists read as JSON
    # writes them (true, not True), however the name is put together.
    spec = _spec(tmp_path, """\
  sweep:
    type: echo
    matrix:
      seed: [7, -1]
      flag: [true, null]
      pair: [[1, "x"]]
    input: {}
""")
    assert [name for name, _ in matrix_instances(spec.steps["sweep"])] == [
        'sweep[seed=7,flag=true,pair=[1, "x"]]', 'sweep[seed=7,flag=null,pair=[1, "x"]]',
        'sweep[seed=-1,flag=true,pair=[1, "x"]]', 'sweep[seed=-1,flag=null,pair=[1, "x"]]',
    ]


def test_render_tree_renders_keys_values_and_keeps_types(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """\
  a:
    type: echo
    input:
      prompt: "{{ subject }} at {{ pipeline.name }}"
      seed: "{{ 40 + 2 }}"
      loras: {"{{ subject }}-lora": "{{ 0.5 }}"}
      list: ["{{ steps.b.output.url }}", 3]
      run: "{{ run.id }}"
  b:
    type: echo
    input: {}
""")
    context = base_context(spec, None)
    context["steps"] = {"b": pending_step_view("b")}
    engine = TemplateEngine(spec.base_dir)
    step = spec.steps["a"]
    rendered = render_tree(engine, spec, step, step.input, context)
    assert rendered["prompt"] == "fox at p"
    assert rendered["seed"] == 42
    assert rendered["loras"] == {"fox-lora": 0.5}
    assert rendered["list"] == [Pending("steps.b.output.url"), 3]
    assert resolve_pending(rendered)["list"] == ["<pending: steps.b.output.url>", 3]
    assert resolve_pending(rendered)["run"] == "<pending: run.id>"
    assert render_tree(engine, spec, step, step.input, base_context(spec, "r1") | {
        "steps": {"b": {"output": {"url": "u"}}}})["run"] == "r1"


def test_render_errors_point_at_the_line_inside_a_block_scalar(tmp_path: Path) -> None:
    spec = _spec(tmp_path, """\
  a:
    type: echo
    input:
      prompt: |
        {{ subject }}, and
        a {{ colour }} sky
""")
    engine = TemplateEngine(spec.base_dir)
    step = spec.steps["a"]
    with pytest.raises(PipelineInvalid) as info:
        render_tree(engine, spec, step, step.input, base_context(spec, None))
    (diag,) = info.value.diagnostics
    assert diag.message == "in step 'a': undefined name 'colour'"
    assert diag.location is not None and diag.location.line == 11
    assert diag.source_line == "        a {{ colour }} sky"
