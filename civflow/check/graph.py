"""The step DAG: template references and `needs` as edges, cycles named by their steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import networkx as nx

from civflow.check.render import template_diagnostic, template_location
from civflow.errors import Diagnostic, Location, PipelineInvalid
from civflow.keys import KeyPath
from civflow.loading.model import PipelineSpec, StepSpec
from civflow.template import Reference, TemplateEngine, TemplateFailed, walk_strings


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


def step_templates(spec: PipelineSpec, step: StepSpec) -> list[tuple[KeyPath, str, bool]]:
    """Every template-bearing string of a step: (document path, text, is_key)."""
    found: list[tuple[KeyPath, str, bool]] = []
    for path, text, is_key in walk_strings(step.input):
        found.append((spec.input_path(step.name, path), text, is_key))
    if step.foreach is not None:
        found.append((("steps", step.name, "foreach"), step.foreach, False))
    if step.key is not None:
        found.append((("steps", step.name, "key"), step.key, False))
    if isinstance(step.when, str):
        found.append((("steps", step.name, "when"), step.when, False))
    return found


def build_graph(spec: PipelineSpec, engine: TemplateEngine) -> StepGraph:
    """Find every reference and build the DAG; raise PipelineInvalid on template or cycle errors.

    Reference *meaning* (unknown steps, output paths) is checked by `civflow.check`;
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
                problems.append(template_diagnostic(spec, doc_path, exc, exc.message,
                                                    key=is_key))
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
