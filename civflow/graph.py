"""Spec -> step DAG and step instances: references, cycles, matrix expansion, rendering."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

from civflow.errors import Diagnostic, Location, PipelineInvalid
from civflow.keys import KeyPath
from civflow.spec.model import PipelineSpec, StepSpec
from civflow.template import Pending, Reference, TemplateEngine, TemplateFailed, walk_strings


@dataclass(frozen=True, slots=True)
class LocatedRef:
    """A reference found in a step, with the document path of the template holding it."""

    ref: Reference
    doc_path: KeyPath
    location: Location


@dataclass(frozen=True)
class StepGraph:
    """The steps, their references, and the dependency graph between them."""

    graph: nx.DiGraph[str]  # edge upstream -> downstream
    refs: Mapping[str, tuple[LocatedRef, ...]]
    order: tuple[str, ...]  # topological, ties broken by file order

    def upstream(self, step: str) -> tuple[str, ...]:
        return tuple(sorted(self.graph.predecessors(step)))

    def downstream_closure(self, steps: set[str]) -> set[str]:
        out = set(steps)
        for step in steps:
            out |= nx.descendants(self.graph, step)
        return out

    def upstream_closure(self, steps: set[str]) -> set[str]:
        out = set(steps)
        for step in steps:
            out |= nx.ancestors(self.graph, step)
        return out


def template_location(spec: PipelineSpec, doc_path: KeyPath, line: int, *, key: bool = False
                      ) -> Location:
    """Where line `line` of the template at `doc_path` is in the YAML file."""
    start = spec.doc.location(doc_path, key=key)
    if line <= 1 and doc_path not in spec.doc.block_scalars:
        return start
    offset = line if doc_path in spec.doc.block_scalars else line - 1
    if not offset:
        return start
    # Inside a block scalar or a multi-line string: point at the text, past its indentation.
    text = spec.doc.line_text(start.line + offset) or ""
    return Location(start.file, start.line + offset, len(text) - len(text.lstrip(" ")) + 1)


def step_templates(spec: PipelineSpec, step: StepSpec) -> list[tuple[KeyPath, str, bool]]:
    """Every template-bearing string of a step: (document path, text, is_key)."""
    found: list[tuple[KeyPath, str, bool]] = []
    for path, text, is_key in walk_strings(step.input):
        found.append((spec.input_path(step.name, path), text, is_key))
    if step.foreach is not None:
        found.append((("steps", step.name, "foreach"), step.foreach, False))
    if isinstance(step.when, str):
        found.append((("steps", step.name, "when"), step.when, False))
    return found


def build_graph(spec: PipelineSpec, engine: TemplateEngine) -> StepGraph:
    """Find every reference and build the DAG; raise PipelineInvalid on template or cycle errors.

    Reference *meaning* (unknown steps, output paths) is checked by `civflow.spec.check`;
    here unknown steps are simply not edges.
    """
    refs: dict[str, tuple[LocatedRef, ...]] = {}
    problems: list[Diagnostic] = []
    graph: nx.DiGraph[str] = nx.DiGraph()
    graph.add_nodes_from(spec.steps)
    for step in spec.steps.values():
        found: list[LocatedRef] = []
        for doc_path, text, is_key in step_templates(spec, step):
            try:
                analysis = engine.analyse(text)
            except TemplateFailed as exc:
                where = template_location(spec, doc_path, exc.line, key=is_key)
                problems.append(spec.doc.diagnostic(exc.message, location=where, hint=exc.hint))
                continue
            for ref in analysis.references:
                found.append(LocatedRef(ref, doc_path,
                                        template_location(spec, doc_path, ref.line, key=is_key)))
        refs[step.name] = tuple(found)
        for located in found:
            if located.ref.step in spec.steps and located.ref.step != step.name:
                graph.add_edge(located.ref.step, step.name)
        for need in step.needs:
            if need in spec.steps and need != step.name:
                graph.add_edge(need, step.name)
    if problems:
        raise PipelineInvalid(problems)
    try:
        cycle = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        names = [edge[0] for edge in cycle]
        first = min(names, key=lambda n: spec.steps[n].order)
        start = names.index(first)
        ring = [*names[start:], *names[:start], first]
        raise PipelineInvalid([spec.doc.diagnostic(
            f"the steps form a cycle: {' -> '.join(ring)}", ("steps", first), key=True,
            hint="a step cannot depend on itself, directly or through other steps")])
    order = tuple(nx.lexicographical_topological_sort(graph, key=lambda n: spec.steps[n].order))
    return StepGraph(graph, refs, order)


# -- instances -------------------------------------------------------------------


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def matrix_instances(step: StepSpec) -> list[tuple[str, dict[str, Any]]]:
    """(instance name, matrix values) for each combination, in the order written."""
    if not step.matrix:
        return [(step.name, {})]
    names = [name for name, _ in step.matrix]
    out = []
    for combo in itertools.product(*(values for _, values in step.matrix)):
        values = dict(zip(names, combo, strict=True))
        label = ",".join(f"{k}={_value_text(v)}" for k, v in values.items())
        out.append((f"{step.name}[{label}]", values))
    return out


def foreach_name(step: str, index: int) -> str:
    return f"{step}[{index}]"


def fanout_name(step: str) -> str:
    return f"{step}[*]"


def base_context(spec: PipelineSpec, run_id: str | None) -> dict[str, Any]:
    context: dict[str, Any] = dict(spec.vars)
    context["pipeline"] = {"name": spec.name}
    context["run"] = {"id": run_id if run_id is not None else Pending("run.id")}
    return context


def pending_step_view(step: str) -> dict[str, Any]:
    return {"output": Pending(f"steps.{step}.output"),
            "outputs": Pending(f"steps.{step}.outputs")}


def render_tree(engine: TemplateEngine, spec: PipelineSpec, step: StepSpec, value: Any,
                context: Mapping[str, Any], path: KeyPath = ()) -> Any:
    """Render every string in `value` (mapping keys too); errors point into the YAML file."""
    if isinstance(value, str):
        return _render_one(engine, spec, step, value, context, path, key=False)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            rendered_key = _render_one(engine, spec, step, key, context, (*path, key), key=True)
            out[str(rendered_key)] = render_tree(engine, spec, step, inner, context,
                                                 (*path, key))
        return out
    if isinstance(value, list):
        return [render_tree(engine, spec, step, inner, context, (*path, i))
                for i, inner in enumerate(value)]
    return value


def _render_one(engine: TemplateEngine, spec: PipelineSpec, step: StepSpec, text: str,
                context: Mapping[str, Any], path: KeyPath, *, key: bool) -> Any:
    try:
        return engine.render(text, context)
    except TemplateFailed as exc:
        doc_path = spec.input_path(step.name, path)
        where = template_location(spec, doc_path, exc.line, key=key)
        raise PipelineInvalid([spec.doc.diagnostic(
            f"in step '{step.name}': {exc.message}", location=where, hint=exc.hint)]) from None


def render_field(engine: TemplateEngine, spec: PipelineSpec, step: StepSpec, field: str,
                 text: str, context: Mapping[str, Any]) -> Any:
    """Render `foreach` or `when` of a step."""
    try:
        return engine.render(text, context)
    except TemplateFailed as exc:
        where = template_location(spec, ("steps", step.name, field), exc.line)
        raise PipelineInvalid([spec.doc.diagnostic(
            f"in step '{step.name}' {field}: {exc.message}", location=where,
            hint=exc.hint)]) from None


def resolve_pending(value: Any) -> Any:
    """Turn Pending objects into their placeholder strings, for display and JSON."""
    if isinstance(value, Pending):
        return str(value)
    if isinstance(value, Mapping):
        return {k: resolve_pending(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_pending(v) for v in value]
    return value
