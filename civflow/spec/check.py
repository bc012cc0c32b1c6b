"""Everything `civflow validate` checks beyond the schema: names, references, catalog, cycles."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from civflow import catalog
from civflow.errors import Diagnostic, PipelineInvalid, Severity
from civflow.graph import (
    StepGraph,
    base_context,
    build_graph,
    matrix_instances,
    pending_step_view,
    render_tree,
    step_templates,
    template_location,
)
from civflow.spec.model import RESERVED_NAMES, PipelineSpec, StepSpec
from civflow.template import Pending, TemplateEngine, TemplateFailed, is_pending


@dataclass(frozen=True)
class Checked:
    """A pipeline that passed every check, ready to plan; warnings ride along."""

    spec: PipelineSpec
    engine: TemplateEngine
    graph: StepGraph
    warnings: tuple[Diagnostic, ...]


def check_pipeline(spec: PipelineSpec, *, strict: bool = False) -> Checked:
    """Run every static check; raise PipelineInvalid with all errors (and warnings)."""
    engine = TemplateEngine(spec.base_dir)
    found: list[Diagnostic] = []
    found += _check_names(spec, engine)
    found += _check_needs(spec)
    graph = build_graph(spec, engine)  # raises on template syntax errors and cycles
    found += _check_references(spec, graph)
    if not any(d.is_error for d in found):
        found += _check_inputs(spec, engine, strict=strict)
    found.sort(key=lambda d: (d.location.line, d.location.col) if d.location else (0, 0))
    if any(d.is_error for d in found):
        raise PipelineInvalid(found)
    return Checked(spec, engine, graph, tuple(found))


def _did_you_mean(name: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _check_names(spec: PipelineSpec, engine: TemplateEngine) -> list[Diagnostic]:
    """Every name a template reads must be a variable or a context name of that step."""
    out: list[Diagnostic] = []
    for step in spec.steps.values():
        allowed = set(spec.vars) | {"steps", "pipeline", "run"}
        if step.matrix:
            allowed.add("matrix")
        for doc_path, text, is_key in step_templates(spec, step):
            field = doc_path[2] if doc_path[:2] == ("steps", step.name) else "input"
            if field != "foreach" and step.foreach is not None:
                allowed_here = allowed | {"item", "index"}
            else:
                allowed_here = allowed
            try:
                analysis = engine.analyse(text)
            except TemplateFailed:
                continue  # reported by build_graph with its location
            for name in sorted(analysis.names - allowed_here):
                where = template_location(spec, doc_path, analysis.name_lines.get(name, 1),
                                          key=is_key)
                if name in RESERVED_NAMES:
                    why = {"matrix": "this step has no 'matrix'",
                           "item": "only a step with 'foreach' has 'item'",
                           "index": "only a step with 'foreach' has 'index'"}.get(name)
                    if field == "foreach" and name in ("item", "index"):
                        why = "'foreach' itself cannot use 'item' or 'index'"
                    out.append(spec.doc.diagnostic(
                        f"'{name}' is not available in step '{step.name}'", location=where,
                        hint=why))
                    continue
                known = sorted(spec.vars)
                hint = _did_you_mean(name, known) or (
                    f"known variables: {', '.join(known)}" if known else
                    "declare it under 'vars:'")
                out.append(spec.doc.diagnostic(
                    f"undefined variable '{name}' in step '{step.name}'", location=where,
                    hint=hint))
            if analysis.bad_steps_use is not None:
                out.append(spec.doc.diagnostic(
                    f"'steps' must be followed by a step name in step '{step.name}'",
                    location=template_location(spec, doc_path, analysis.bad_steps_use,
                                               key=is_key),
                    hint="write steps.<name>.output or steps.<name>.outputs"))
    return out


def _check_needs(spec: PipelineSpec) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for step in spec.steps.values():
        for i, need in enumerate(step.needs):
            path = ("steps", step.name, "needs", i)
            if need == step.name:
                out.append(spec.doc.diagnostic(f"step '{step.name}' needs itself", path))
            elif need not in spec.steps:
                out.append(spec.doc.diagnostic(
                    f"step '{step.name}' needs unknown step '{need}'", path,
                    hint=_did_you_mean(need, list(spec.steps)) or
                    f"steps: {', '.join(spec.steps)}"))
    return out


def _check_references(spec: PipelineSpec, graph: StepGraph) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for step in spec.steps.values():
        for located in graph.refs[step.name]:
            ref, where = located.ref, located.location

            def report(message: str, hint: str | None = None, _where: Any = where) -> None:
                out.append(spec.doc.diagnostic(message, location=_where, hint=hint))

            if ref.step == step.name:
                report(f"step '{step.name}' refers to its own output",
                       "a step can only use the outputs of other steps")
                continue
            upstream = spec.steps.get(ref.step)
            if upstream is None:
                report(f"unknown step '{ref.step}' in {ref}",
                       _did_you_mean(ref.step, list(spec.steps)) or
                       f"steps: {', '.join(spec.steps)}")
                continue
            if ref.kind is None:
                continue
            if ref.kind not in ("output", "outputs"):
                report(f"'{ref}' is not valid: a step has '.output' and '.outputs'",
                       _did_you_mean(ref.kind, ["output", "outputs"]))
                continue
            if ref.kind == "output" and upstream.fans_out:
                report(f"step '{ref.step}' has several instances, so it has no single '.output'",
                       f"use steps.{ref.step}.outputs (a list, one per instance)")
                continue
            path = ref.path
            if ref.kind == "outputs":
                if path and not isinstance(path[0], int):
                    report(f"'{ref}' is not valid: '.outputs' is a list",
                           f"index it first: steps.{ref.step}.outputs[0]...")
                    continue
                path = path[1:]
            problem = catalog.output_path_error(upstream.type, upstream.input, path)
            if problem:
                # The catalog appends its suggestion after "; "; it reads better as the hint.
                what, _, suggestion = problem.partition("; ")
                if suggestion.startswith("it has: "):
                    suggestion = "the fields there are " + suggestion.removeprefix("it has: ")
                report(f"{ref} does not exist: {what}", suggestion or None)
    return out


def _opaque(value: object) -> bool:
    return is_pending(value) or (isinstance(value, str) and "{{" in value)


def _check_inputs(spec: PipelineSpec, engine: TemplateEngine, *, strict: bool
                  ) -> list[Diagnostic]:
    """Render each instance with what is known now and check it against the catalog."""
    out: list[Diagnostic] = []
    reported: set[tuple[object, str]] = set()
    context = base_context(spec, None)
    context["steps"] = {name: pending_step_view(name) for name in spec.steps}
    for step in spec.steps.values():
        if step.foreach is not None:
            context_step = {**context, "item": Pending("item"), "index": Pending("index")}
        else:
            context_step = context
        for _name, values in matrix_instances(step):
            ctx = {**context_step, "matrix": values} if step.matrix else context_step
            try:
                rendered = render_tree(engine, spec, step, step.input, ctx)
            except PipelineInvalid as exc:
                out.extend(exc.diagnostics)
                break
            if not isinstance(rendered, Mapping):
                continue
            for issue in catalog.check_input(step.type, rendered, opaque=_opaque):
                diag = _issue_diagnostic(spec, step, issue, strict=strict)
                key = (diag.location, diag.message)
                if key not in reported:
                    reported.add(key)
                    out.append(diag)
    return out


def _issue_diagnostic(spec: PipelineSpec, step: StepSpec, issue: catalog.InputIssue, *,
                      strict: bool) -> Diagnostic:
    path = tuple(issue.path)
    # Point at the key for unknown fields, at the value otherwise.
    own = _exists(step.input, path)
    key = bool(path) and own and "not a field" in issue.message
    while path and not _exists(step.input, path):
        path = path[:-1]
    where_path: tuple[str | int, ...]
    if not path:
        # A field missing from the input as a whole: point at the 'input:' key itself.
        where_path, key = ("steps", step.name, "input"), True
    else:
        where_path = spec.input_path(step.name, path)
    severity = issue.severity
    if strict and severity is Severity.WARNING:
        severity = Severity.ERROR
    hint = issue.hint or _fallback_hint(issue.message)
    if issue.severity is Severity.WARNING and not strict:
        hint = (hint + "; " if hint else "") + "--strict makes this an error"
    return spec.doc.diagnostic(f"step '{step.name}': {issue.message}", where_path, key=key,
                               hint=hint, severity=severity)


def _fallback_hint(message: str) -> str | None:
    """A hint for catalog findings that come without one."""
    missing = re.match(r"missing required field '(\w+)'(?: in '(\w+)')?", message)
    if missing and missing.group(2):
        return f"add '{missing.group(1)}:' under '{missing.group(2)}:'"
    if missing:
        return f"add '{missing.group(1)}:' to the step's input (or to defaults: for its type)"
    if re.search(r"must be an? (integer|number), got '", message):
        return "write the number without quotes or units"
    return None


def _exists(value: Any, path: tuple[str | int, ...]) -> bool:
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return False
    return True
