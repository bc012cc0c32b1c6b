"""Everything `civflow validate` checks beyond the schema: names, references, catalog, cycles.

Every phase runs and its findings are collected: a schema error in one step does not hide
a template error in another. What follows from an earlier error is not reported again: a
template that does not parse is not analysed further, a template with an error is left
out of the catalog check (its value counts as unknown), a step with a schema error is left
out of the later phases (and references to it are not reported), cycles are looked for
only when every template parsed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from jinja2 import TemplateNotFound, TemplateSyntaxError, nodes
from jinja2 import meta as jinja_meta

from civflow import catalog
from civflow.catalog import OutputIssueKind
from civflow.check._inputs import check_inputs
from civflow.check.graph import StepGraph, build_graph
from civflow.check.render import (
    IMAGE_FIELDS,
    INSTANCE_FIELDS,
    STEP_VIEW_FIELDS,
    fanout_source,
    instance_key,
    matrix_instances,
    read_diagnostic,
    same_value,
    template_diagnostic,
    template_location,
    value_text,
)
from civflow.errors import CivflowError, Diagnostic, PipelineInvalid, Severity
from civflow.keys import KeyPath, key_text
from civflow.loading.model import (
    RESERVED_NAMES,
    PipelineSpec,
    StepSpec,
    deep_merge,
    opted_sets,
    step_defaults,
)
from civflow.loading.yamlsrc import SourceDoc
from civflow.names import unsafe_name_reason
from civflow.template import (
    SELECT_KIND,
    Analysis,
    TemplateEngine,
    TemplateFailed,
    is_template,
    walk_strings,
)
from civflow.template import Reference as TemplateRef

# More than this many findings in one file are summed up in one line: past a point, the
# rest is noise until the first ones are fixed.
MAX_DIAGNOSTICS = 50



@dataclass(frozen=True)
class Checked:
    """A pipeline that passed every check, ready to plan; warnings ride along."""

    spec: PipelineSpec
    engine: TemplateEngine
    graph: StepGraph
    warnings: tuple[Diagnostic, ...]


@dataclass(frozen=True)
class _Scope:
    """What the schema phase left intact for the later phases."""

    blocked: frozenset[str] = frozenset()  # steps left out because of schema errors
    names_known: bool = True  # the variables are known, so undefined names can be found
    catalog: bool = True  # `defaults:` is intact, so step inputs are complete


@dataclass(frozen=True)
class _Template:
    """One template-bearing string of a step and what analysing it found."""

    step: str
    doc_path: KeyPath
    input_path: KeyPath | None  # None for `foreach` and `when`
    text: str
    is_key: bool
    analysis: Analysis | None  # None: it did not parse (reported once, not analysed)

    @property
    def field(self) -> str:
        return "input" if self.input_path is not None else str(self.doc_path[2])


def check_pipeline(spec: PipelineSpec, *, strict: bool = False) -> Checked:
    """Run every static check; raise PipelineInvalid with all errors (and warnings).

    `strict` is accepted for compatibility: unknown step types, engines, ecosystems,
    operations and fields are errors by default now, and `unchecked: true` on a step is the
    one way to let them through.
    """
    del strict
    spec = _fit_defaults(_with_unchecked_flags(spec))
    found, graph, engine = _collect(spec, _Scope())
    errors = [d for d in found if d.is_error]
    if errors or graph is None:
        # Named as the document is: a pipeline given as text is `<string>`.
        raise PipelineInvalid(conclude(FsPath(spec.doc.path), found))
    return Checked(spec, engine, graph, tuple(_ordered(found)))


def check_file(path: FsPath, overrides: Mapping[str, Any] | None = None, *,
               strict: bool = False) -> Checked:
    """Load and check one pipeline file, reporting every independent error in one go.

    When the schema finds errors, the parts it left intact (the other steps, the
    variables) are still checked, and all findings are raised together.
    """
    from civflow.loading import load_pipeline, read_source

    try:
        spec = load_pipeline(path, overrides)
    except PipelineInvalid as exc:
        try:
            doc = read_source(path)
        except CivflowError:
            raise exc from None  # YAML itself is broken: nothing else can be read
        partial = _partial_spec(path, doc, overrides)
        if partial is None:
            raise PipelineInvalid(conclude(path, exc.diagnostics)) from None
        spec, scope = partial
        more, _graph, _engine = _collect(_fit_defaults(spec), scope)
        raise PipelineInvalid(conclude(path, [*exc.diagnostics, *more])) from None
    return check_pipeline(spec, strict=strict)


def conclude(path: FsPath, found: list[Diagnostic] | tuple[Diagnostic, ...]
             ) -> list[Diagnostic]:
    """Findings in file order, each once, at most MAX_DIAGNOSTICS and a count of the rest."""
    ordered = _ordered(found)
    if len(ordered) <= MAX_DIAGNOSTICS:
        return ordered
    rest = ordered[MAX_DIAGNOSTICS:]
    errors = sum(d.is_error for d in rest)
    words = f"{errors} more error{'s' if errors != 1 else ''}"
    if len(rest) > errors:
        warnings = len(rest) - errors
        words += f" and {warnings} more warning{'s' if warnings != 1 else ''}"
    return [*ordered[:MAX_DIAGNOSTICS], Diagnostic(
        f"{path}: {words} not shown", None,
        "fix the ones above and run civflow validate again",
        Severity.ERROR if errors else Severity.WARNING)]


def _ordered(found: list[Diagnostic] | tuple[Diagnostic, ...]) -> list[Diagnostic]:
    unique: dict[tuple[object, str], Diagnostic] = {}
    for diag in found:
        unique.setdefault((diag.location, diag.message), diag)
    return sorted(unique.values(), key=lambda d: (d.location.line, d.location.col)
                  if d.location else (0, 0))


def _collect(spec: PipelineSpec, scope: _Scope
             ) -> tuple[list[Diagnostic], StepGraph | None, TemplateEngine]:
    """Every phase after the schema, each on what the earlier ones left intact."""
    engine = TemplateEngine(spec.base_dir, shared_dir=spec.project_root)
    too_big = _check_sizes(spec)
    if too_big:  # nothing below may expand the steps: answer before trying
        return too_big, None, engine
    templates, found = _scan(spec, engine)
    bad: set[tuple[str, KeyPath]] = {(t.step, t.input_path) for t in templates
                                  if t.analysis is None and t.input_path is not None}
    # Broken `foreach`/`when` templates, so they are not rendered (and reported) again.
    bad |= {(t.step, (f"<{t.field}>",)) for t in templates
            if t.analysis is None and t.input_path is None}
    if scope.names_known:
        found += _check_names(spec, templates, bad)
    found += _check_needs(spec, scope.blocked)
    found += _check_matrix_values(spec)
    found += _check_references(spec, engine, templates, scope.blocked, bad)
    found += _check_item_shapes(spec, engine, templates, scope.blocked, bad)
    graph: StepGraph | None = None
    if all(t.analysis is not None for t in templates):
        try:
            graph = build_graph(spec, engine)
        except PipelineInvalid as exc:  # a cycle: every template parsed
            found += exc.diagnostics
    if scope.catalog:
        found += check_inputs(spec, engine, bad, scope.blocked)
    return found, graph, engine


def _did_you_mean(name: str, known: list[str]) -> str | None:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


# -- templates ---------------------------------------------------------------------------


def _scan(spec: PipelineSpec, engine: TemplateEngine) -> tuple[list[_Template], list[Diagnostic]]:
    """Analyse every template of every step once; report those that do not parse."""
    templates: list[_Template] = []
    found: list[Diagnostic] = []
    for step in spec.steps.values():
        strings: list[tuple[KeyPath, KeyPath | None, str, bool]] = [
            (spec.input_path(step.name, path), path, text, is_key)
            for path, text, is_key in walk_strings(step.input)]
        if step.foreach is not None:
            strings.append((("steps", step.name, "foreach"), None, step.foreach, False))
        if isinstance(step.when, str):
            strings.append((("steps", step.name, "when"), None, step.when, False))
        for doc_path, input_path, text, is_key in strings:
            analysis: Analysis | None
            try:
                analysis = engine.analyse(text)
            except TemplateFailed as exc:
                found.append(template_diagnostic(spec, doc_path, exc, exc.message, key=is_key))
                analysis = None
            templates.append(_Template(step.name, doc_path, input_path, text, is_key, analysis))
    return templates, found


def _check_names(spec: PipelineSpec, templates: list[_Template], bad: set[tuple[str, KeyPath]]
                 ) -> list[Diagnostic]:
    """Every name a template reads must be a variable or a context name of that step."""
    out: list[Diagnostic] = []
    for template in templates:
        analysis = template.analysis
        if analysis is None:
            continue
        step = spec.steps[template.step]
        allowed = set(spec.vars) | {"steps", "pipeline", "run"}
        if step.matrix:
            allowed.add("matrix")
        field = template.field
        if field != "foreach" and step.foreach is not None:
            allowed |= {"item", "index"}
        before = len(out)
        for name in sorted(analysis.names - allowed):
            where = template_location(spec, template.doc_path, analysis.name_lines.get(name, 1),
                                      key=template.is_key)
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
                location=template_location(spec, template.doc_path, analysis.bad_steps_use,
                                           key=template.is_key),
                hint="write steps.<name>.output or steps.<name>.outputs"))
        if len(out) > before and template.input_path is not None:
            bad.add((template.step, template.input_path))
    return out


_LIMIT_HINT = ("split the sweep into several pipelines, or raise the bound on purpose with a "
               "top-level `limits: {instances: N}` (at most 100,000)")


def _instance_counts(spec: PipelineSpec) -> dict[str, int]:
    """How many instances each step expands to, from the matrix sizes and the fan-outs
    whose size is known before the run (`foreach` over a step's outputs or its images of
    a literal `quantity`), computed without expanding anything; other fan-outs count 1."""
    counts: dict[str, int] = {}
    for step in spec.steps.values():
        counts[step.name] = math.prod(len(values) for _, values in step.matrix)
    for _ in range(len(spec.steps)):  # fan-outs of fan-outs, in any file order
        changed = False
        for step in spec.steps.values():
            found = fanout_source(step)
            source = spec.steps.get(found[0]) if found else None
            if found is None or source is None or source.name == step.name:
                continue
            each = catalog.image_count(source.type, source.input) or 1 \
                if found[1] in ("images", "output.images") else 1
            count = counts[source.name] * each
            if count != counts[step.name]:
                counts[step.name], changed = count, True
        if not changed:
            break
    return counts


def _check_sizes(spec: PipelineSpec) -> list[Diagnostic]:
    """Refuse, before anything is expanded, a pipeline that would expand to more
    instances than its limit: a 20 KB file can name a billion matrix combinations, and
    validate and plan run on every pull request, forks included."""
    limit = spec.instance_limit
    counts = _instance_counts(spec)
    out: list[Diagnostic] = []
    for step in spec.steps.values():
        count = counts[step.name]
        if count <= limit:
            continue
        sizes = " × ".join(f"{len(v):,} {k}" for k, v in step.matrix)
        how = f" ({sizes})" if step.matrix else " (a fan-out of its upstream)"
        where = ("steps", step.name, "matrix" if step.matrix else "foreach")
        out.append(spec.doc.diagnostic(
            f"step '{step.name}' expands to {count:,} instances{how}, more than the "
            f"pipeline's limit of {limit:,}", where, hint=_LIMIT_HINT))
    total = sum(counts.values())
    if not out and total > limit:
        out.append(spec.doc.diagnostic(
            f"the pipeline expands to {total:,} instances in all, more than its limit of "
            f"{limit:,}", ("steps",), hint=_LIMIT_HINT))
    return out


def _check_matrix_values(spec: PipelineSpec) -> list[Diagnostic]:
    """A matrix value names an instance and its output folder: a NUL or control character
    would crash after the workflow is paid, so it is refused here."""
    out: list[Diagnostic] = []
    for step in spec.steps.values():
        for key, values in step.matrix:
            for i, value in enumerate(values):
                reason = unsafe_name_reason(value) if isinstance(value, str) else None
                if reason is not None:
                    out.append(spec.doc.diagnostic(
                        f"matrix value of '{key}' in step '{step.name}' {reason}",
                        ("steps", step.name, "matrix", key, i),
                        hint="matrix values name instances and folders: remove control "
                             "characters (use a var for the text and a short key here)"))
    return out


def _check_needs(spec: PipelineSpec, blocked: frozenset[str]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for step in spec.steps.values():
        for i, need in enumerate(step.needs):
            path = ("steps", step.name, "needs", i)
            if need == step.name:
                out.append(spec.doc.diagnostic(f"step '{step.name}' needs itself", path))
            elif need not in spec.steps and need not in blocked:
                out.append(spec.doc.diagnostic(
                    f"step '{step.name}' needs unknown step '{need}'", path,
                    hint=_did_you_mean(need, list(spec.steps)) or
                    f"steps: {', '.join(spec.steps)}"))
    return out


def _check_references(spec: PipelineSpec, engine: TemplateEngine, templates: list[_Template],
                      blocked: frozenset[str], bad: set[tuple[str, KeyPath]]) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for template in templates:
        if template.analysis is None:
            continue
        guards: frozenset[tuple[str | int, ...]] | None = None
        before = len(out)
        for ref in template.analysis.references:
            problem = _reference_problem(spec, engine, template.step, ref, blocked)
            if problem is not None:
                message, hint = problem
                out.append(read_diagnostic(spec, template.doc_path, message, line=ref.line,
                                           key=template.is_key, file=ref.file,
                                           needle=f"steps.{ref.step}", hint=hint))
                continue
            optional = _optional_part(spec, ref)
            if optional is None:
                continue
            if guards is None:
                guards = _guarded_chains(engine, template.text)
            if optional not in guards:
                shown = _chain_text(optional)
                out.append(read_diagnostic(
                    spec, template.doc_path,
                    f"{shown} may be missing: {spec.steps[ref.step].type} sets "
                    f"'{optional[-1]}' only sometimes", line=ref.line, key=template.is_key,
                    file=ref.file, needle=f"steps.{ref.step}",
                    hint=f"write {{{{ {shown} | default(...) }}}}, or test "
                         f"'{shown} is defined' first"))
        if len(out) > before and template.input_path is not None:
            bad.add((template.step, template.input_path))
    return out


def _check_item_shapes(spec: PipelineSpec, engine: TemplateEngine, templates: list[_Template],
                       blocked: frozenset[str], bad: set[tuple[str, KeyPath]]
                       ) -> list[Diagnostic]:
    """Reads of the items of an earlier step's list, checked against its output shape:
    `selectattr('key', ...)` over `.outputs` (outputs have no `key`), and `item.<path>`
    in a step whose `foreach` is such a list. Each would fail at run time, after the
    steps before it were paid for."""
    out: list[Diagnostic] = []
    sources: dict[str, TemplateRef] = {}
    for template in templates:
        if template.field == "foreach" and template.analysis is not None and \
                template.analysis.item_source is not None and _reference_problem(
                    spec, engine, template.step, template.analysis.item_source,
                    blocked) is None:  # else reported once, at the foreach
            sources[template.step] = template.analysis.item_source
    for template in templates:
        analysis = template.analysis
        if analysis is None:
            continue
        before = len(out)
        for read in analysis.item_reads:
            problem = _item_problem(spec, engine, template.step, read.source, read.path,
                                    read.line, blocked)
            if problem is not None:
                dotted = ".".join(str(p) for p in read.path)
                out.append(read_diagnostic(
                    spec, template.doc_path,
                    f"{read.via}('{dotted}') reads a field the items of {read.source} do not "
                    f"have: {problem[0]}", line=read.line, key=template.is_key,
                    file=read.file, needle=read.via,
                    hint=_item_hint(spec, read.source, read.path) or problem[1]))
        axes = [axis for axis, _ in spec.steps[template.step].matrix]
        for read_path in analysis.matrix_paths if axes else ():
            axis = read_path.path[0]
            if isinstance(axis, str) and axis not in axes:
                out.append(read_diagnostic(
                    spec, template.doc_path,
                    f"matrix.{axis} does not exist: step '{template.step}' has the matrix "
                    f"axes {', '.join(axes)}", line=read_path.line, key=template.is_key,
                    file=read_path.file, needle=f"matrix.{axis}",
                    hint=_did_you_mean(axis, axes) or
                    "add the axis under 'matrix:', or read one that is there"))
        source = sources.get(template.step)
        if source is not None and template.field != "foreach":
            for read_path in analysis.item_paths:
                path = read_path.path
                problem = _item_problem(spec, engine, template.step, source, path,
                                        read_path.line, blocked)
                if problem is not None:
                    out.append(read_diagnostic(
                        spec, template.doc_path,
                        f"item{key_text(path, leading_dot=True)} cannot exist: 'item' is one "
                        f"of {source}, and {problem[0]}", line=read_path.line,
                        key=template.is_key, file=read_path.file, needle="item",
                        hint=_item_hint(spec, source, path) or problem[1]))
        if len(out) > before:  # not rendered again (and reported twice) by later checks
            bad.add((template.step, template.input_path if template.input_path is not None
                     else (f"<{template.field}>",)))
    return out


def _item_problem(spec: PipelineSpec, engine: TemplateEngine, step: str, source: TemplateRef,
                  path: KeyPath, line: int, blocked: frozenset[str]
                  ) -> tuple[str, str | None] | None:
    """The problem of reading `path` in one item of the list `source`, if any."""
    if source.step not in spec.steps or source.kind is None:
        return None
    item = TemplateRef(source.step, source.kind, (*source.path, 0, *path), line)
    problem = _reference_problem(spec, engine, step, item, blocked)
    if problem is None:
        return None
    return problem[0].split(" does not exist: ", 1)[-1], problem[1]


def _item_hint(spec: PipelineSpec, source: TemplateRef, path: KeyPath) -> str | None:
    """Outputs carry no key: point at `.instances`, which does."""
    if source.kind == "outputs" and not source.path and path and path[0] in INSTANCE_FIELDS:
        return (f"the items of steps.{source.step}.outputs are outputs; select from "
                f"steps.{source.step}.instances (each has key, name, matrix and output)")
    return None


def _reference_problem(spec: PipelineSpec, engine: TemplateEngine, step: str,
                       ref: TemplateRef, blocked: frozenset[str]
                       ) -> tuple[str, str | None] | None:
    """(message, hint) when `ref` cannot work, else None."""
    if ref.step == step:
        return (f"step '{step}' refers to its own output",
                "a step can only use the outputs of other steps")
    upstream = spec.steps.get(ref.step)
    if upstream is None:
        if ref.step in blocked:
            return None  # that step has a schema error of its own
        return (f"unknown step '{ref.step}' in {ref}",
                _did_you_mean(ref.step, list(spec.steps)) or f"steps: {', '.join(spec.steps)}")
    if ref.kind is None:
        return None
    if ref.kind in ("instances", "images"):
        return _instances_problem(upstream, ref)
    if ref.kind == SELECT_KIND:
        return _select_problem(upstream, ref)
    if ref.kind not in ("output", "outputs"):
        return _keyed_problem(spec, engine, upstream, ref)
    if ref.kind == "output" and upstream.fans_out:
        return (f"step '{ref.step}' has several instances, so it has no single '.output'",
                f"use steps.{ref.step}.outputs (a list, one per instance)")
    return _output_problem(upstream, ref, ref.path)


def _instances_problem(upstream: StepSpec, ref: TemplateRef) -> tuple[str, str | None] | None:
    """`steps.<name>.instances[i].<field>`: a list of {key, name, matrix, output};
    `steps.<name>.images[i].<field>`: a list of {key, name, matrix, image}."""
    images = ref.kind == "images"
    if images:
        issue = catalog.output_path_issue(upstream.type, upstream.input, ("images", 0))
        if issue is not None and issue.is_error:
            has = f" (it has {', '.join(issue.fields)})" if issue.fields else ""
            return (f"step '{ref.step}' makes no images: {issue.message}{has}",
                    f"'.images' lists the images of every instance of a step whose output has "
                    f"'images' (imageGen, textToImage); read steps.{ref.step}.outputs or "
                    f"steps.{ref.step}.instances")
    fields, what = (IMAGE_FIELDS, "an image") if images else (INSTANCE_FIELDS, "an instance")
    path = ref.path
    if path and not isinstance(path[0], int):
        return (f"'{ref}' is not valid: '.{ref.kind}' is a list",
                f"index or filter it first: steps.{ref.step}.{ref.kind} | "
                f"selectattr('key', 'in', [...])")
    if len(path) < 2 or not isinstance(path[1], str):
        return None
    field = path[1]
    if field not in fields:
        return (f"{ref} does not exist: {what} has {', '.join(sorted(fields))}",
                _did_you_mean(field, sorted(fields)))
    if field == "matrix" and len(path) > 2 and isinstance(path[2], str):
        axes = [axis for axis, _ in upstream.matrix]
        if path[2] not in axes:
            return (f"{ref} does not exist: step '{ref.step}' has "
                    + (f"the matrix axes {', '.join(axes)}" if axes else "no matrix"),
                    _did_you_mean(path[2], axes) or (
                        f"read one of steps.{ref.step}.{ref.kind}[...].matrix."
                        f"{{{','.join(axes)}}}" if axes else
                        "only a matrix step's instances carry matrix values"))
    if field == "output":
        return _output_problem(upstream, ref, path[2:])
    if field == "image":
        return _output_problem(upstream, ref, ("images", 0, *path[2:]))
    return None


def _select_problem(upstream: StepSpec, ref: TemplateRef) -> tuple[str, str | None] | None:
    """`steps.<name>[{axis: value, ...}]`: the output of the one instance with those
    matrix values. Axis names and values written in the template are checked against the
    matrix; those computed when it renders are checked then."""
    if not upstream.matrix:
        return (f"'{ref}' selects an instance by its matrix values, but step '{ref.step}' "
                "has no matrix",
                f"select it by key, steps.{ref.step}['KEY'], or from "
                f"steps.{ref.step}.instances" if upstream.foreach is not None else
                f"step '{ref.step}' has one instance: write steps.{ref.step}.output")
    axes = dict(upstream.matrix)
    for pick in ref.picks:
        if pick.axis is None:
            continue
        if pick.axis not in axes:
            return (f"step '{ref.step}' has no matrix axis '{pick.axis}'",
                    _did_you_mean(pick.axis, list(axes)) or f"its axes: {', '.join(axes)}")
        values = axes[pick.axis]
        if not pick.known or any(isinstance(v, str) and is_template(v) for v in values) or \
                any(same_value(v, pick.value) for v in values):
            continue  # a value only a render knows, or an axis still to be read from vars
        shown = ", ".join(value_text(v) for v in values[:8]) + \
            (", ..." if len(values) > 8 else "")
        as_text = [str(v) for v in values]
        hint = (f"axis '{pick.axis}' holds {shown}, not text: write "
                f"{pick.axis!r}: {values[as_text.index(str(pick.value))]!r}"
                if str(pick.value) in as_text else
                _did_you_mean(str(pick.value), as_text) or f"axis '{pick.axis}' holds {shown}")
        return (f"step '{ref.step}' has no instance with {pick.axis}="
                f"{json.dumps(pick.value)}", hint)
    named = {pick.axis for pick in ref.picks}
    if None not in named:
        missing = [axis for axis, values in upstream.matrix if axis not in named and
                   len(values) > 1]
        if missing:
            return (f"{ref} leaves out the matrix axis {', '.join(missing)}, so it selects "
                    f"several instances of step '{ref.step}'",
                    f"name every axis that has more than one value: "
                    f"{', '.join(a for a, v in upstream.matrix if len(v) > 1)}; to take "
                    f"several, select from steps.{ref.step}.instances")
    return _output_problem(upstream, ref, ref.path)


def _keyed_problem(spec: PipelineSpec, engine: TemplateEngine, upstream: StepSpec,
                   ref: TemplateRef) -> tuple[str, str | None] | None:
    """`steps.<name>["KEY"]`: one instance's output. A matrix step's keys are known
    before anything runs, a foreach step's only at run time."""
    assert ref.kind is not None
    if not upstream.fans_out:
        return (f"'{ref}' is not valid: a step has '.output', '.outputs' and '.instances'",
                _did_you_mean(ref.kind, list(STEP_VIEW_FIELDS)))
    if upstream.foreach is None:
        try:
            keys = [instance_key(name) for name, _ in
                    matrix_instances(upstream, engine, spec)]
        except PipelineInvalid:
            return None  # the key template's own error is reported at the key
        if ref.kind not in keys:
            shown = ", ".join(keys[:8]) + (", ..." if len(keys) > 8 else "")
            return (f"step '{ref.step}' has no instance '{ref.kind}'",
                    _did_you_mean(ref.kind, keys) or f"its keys: {shown}")
    return _output_problem(upstream, ref, ref.path)


def _output_problem(upstream: StepSpec, ref: TemplateRef, path: KeyPath
                    ) -> tuple[str, str | None] | None:
    """(message, hint) when `path` cannot be in an output of `upstream`."""
    if ref.kind == "outputs":
        if path and not isinstance(path[0], int):
            if not upstream.fans_out:
                single = TemplateRef(ref.step, "output", path, ref.line)
                return (f"'{ref}' is not valid: '.outputs' is a list",
                        f"step '{ref.step}' has one instance: write {single}")
            return (f"'{ref}' is not valid: '.outputs' is a list",
                    f"index it first: steps.{ref.step}.outputs[0]...")
        path = path[1:]
    issue = catalog.output_path_issue(upstream.type, upstream.input, path)
    if issue is None or not issue.is_error:
        return None
    hint: str | None = None
    if issue.suggestions:
        hint = f"did you mean '{issue.suggestions[0]}'?"
    elif issue.kind is OutputIssueKind.NO_FIELD and issue.fields:
        hint = f"the fields there are {', '.join(issue.fields)}"
    return f"{ref} does not exist: {issue.message}", hint


def _optional_part(spec: PipelineSpec, ref: TemplateRef) -> tuple[str | int, ...] | None:
    """The reference up to an output field the upstream sets only sometimes, if any."""
    upstream = spec.steps.get(ref.step)
    if upstream is None or ref.kind not in ("output", "outputs"):
        return None
    skip = 1 if ref.kind == "outputs" else 0
    issue = catalog.output_path_issue(upstream.type, upstream.input, ref.path[skip:])
    if issue is None or issue.kind is not OutputIssueKind.OPTIONAL:
        return None
    assert ref.kind is not None
    return (ref.step, ref.kind, *ref.path[:skip], *issue.at, issue.part)


def _chain_text(chain: tuple[str | int, ...]) -> str:
    return key_text(("steps", *chain))


_GUARD_FILTERS = frozenset({"default", "d"})
_GUARD_TESTS = frozenset({"defined", "undefined"})
_MAX_INCLUDES = 50


def _guarded_chains(engine: TemplateEngine, text: str) -> frozenset[tuple[str | int, ...]]:
    """`steps.…` chains a template guards with `| default(…)` or `is defined` (includes too).

    A reference through an optional output field is safe when exactly the chain that ends
    at that field is guarded: Jinja fails on an attribute of an undefined value before any
    filter sees it.
    """
    found: set[tuple[str | int, ...]] = set()
    sources, seen = [text], set[str]()
    while sources and len(seen) <= _MAX_INCLUDES:
        try:
            tree = engine.env.parse(sources.pop())
        except TemplateSyntaxError:
            continue  # reported where the template is analysed
        for node in tree.find_all((nodes.Filter, nodes.Test)):
            names = _GUARD_FILTERS if isinstance(node, nodes.Filter) else _GUARD_TESTS
            if node.name in names and node.node is not None:
                chain = _static_chain(node.node)
                if chain is not None:
                    found.add(chain)
        for name in jinja_meta.find_referenced_templates(tree):
            if name is None or name in seen or engine.env.loader is None:
                continue
            seen.add(name)
            try:
                sources.append(engine.env.loader.get_source(engine.env, name)[0])
            except (TemplateNotFound, OSError):
                continue  # reported where the template is analysed
    return frozenset(found)


def _static_chain(node: nodes.Node) -> tuple[str | int, ...] | None:
    """`steps.a.output.x[0]` as ('a', 'output', 'x', 0), or None for anything else."""
    parts: list[str | int] = []
    while not isinstance(node, nodes.Name):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and isinstance(node.arg.value, str | int) and not isinstance(node.arg.value, bool):
            parts.append(node.arg.value)
        else:
            return None
        node = node.node
    return tuple(parts[::-1]) if node.name == "steps" else None


# -- catalog -----------------------------------------------------------------------------


def _fit_defaults(spec: PipelineSpec) -> PipelineSpec:
    """`spec` without the fields a type-wide default (`defaults.TYPE`, or a set's `TYPE`)
    gives a step whose input shape does not take them, where another shape of the type
    does: a shared `width` is not forced onto a Flux Kontext edit, which takes
    `aspectRatio`. A field no shape of the type takes stays, and is reported at the
    default's line; so does a field of a scoped entry (`TYPE/ENGINE`), written for that
    shape."""
    steps: dict[str, StepSpec] = {}
    for name, step in spec.steps.items():
        misfits = _misfits(step)
        steps[name] = step if not misfits else dataclasses.replace(
            step, input={k: v for k, v in step.input.items() if k not in misfits},
            defaulted=frozenset(p for p in step.defaulted if p[0] not in misfits),
            default_sources={p: s for p, s in step.default_sources.items()
                             if p[0] not in misfits})
    if all(steps[name] is step for name, step in spec.steps.items()):
        return spec
    return dataclasses.replace(spec, steps=steps)


def _misfits(step: StepSpec) -> frozenset[str]:
    """The top-level fields of `step` that came from a type-wide default and that its
    input shape does not take (but another shape of the type does)."""
    if step.unchecked:
        return frozenset()
    shared = {key for key in step.input if (key,) in step.defaulted and
              step.default_sources.get((key,), ("defaults", step.type))[-1] == step.type}
    if not shared:
        return frozenset()
    known = catalog.type_fields(step.type)
    return frozenset(
        issue.path[0] for issue in catalog.check_input(step.type, step.input, opaque=_templated)
        if issue.kind is catalog.IssueKind.UNKNOWN_FIELD and len(issue.path) == 1 and
        issue.path[0] in shared and issue.path[0] in known)


def _templated(value: object) -> bool:
    return isinstance(value, str) and is_template(value)


def _unchecked_names(doc: SourceDoc) -> frozenset[str]:
    steps = doc.data.get("steps") if isinstance(doc.data, Mapping) else None
    if not isinstance(steps, Mapping):
        return frozenset()
    return frozenset(name for name, raw in steps.items()
                     if isinstance(raw, Mapping) and raw.get("unchecked") is True)


def _with_unchecked_flags(spec: PipelineSpec) -> PipelineSpec:
    """`spec` with `StepSpec.unchecked` set from the document (idempotent)."""
    names = _unchecked_names(spec.doc)
    if not any(spec.steps[n].unchecked is not True for n in names if n in spec.steps):
        return spec
    steps = {name: dataclasses.replace(step, unchecked=True) if name in names else step
             for name, step in spec.steps.items()}
    return dataclasses.replace(spec, steps=steps)


def _partial_spec(path: FsPath, doc: SourceDoc, overrides: Mapping[str, Any] | None
                  ) -> tuple[PipelineSpec, _Scope] | None:
    """The pipeline without the parts that have schema errors, to check the rest.

    None when nothing can be checked: no usable `steps:` mapping, or no step without
    an error of its own.
    """
    from civflow.loading.schema import schema_error_paths

    broken = schema_error_paths(doc)
    data = doc.data
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, Mapping) or ("steps",) in broken:
        return None
    raw_vars = data.get("vars")
    declared: dict[str, Any] = dict(raw_vars) if isinstance(raw_vars, Mapping) else {}
    for name, value in (overrides or {}).items():
        if name in declared:
            declared[name] = value
    raw_defaults = data.get("defaults")
    defaults_ok = (raw_defaults is None or isinstance(raw_defaults, Mapping)) and not any(
        p[:1] == ("defaults",) for p in broken)
    defaults: Mapping[str, Any] = raw_defaults if defaults_ok and raw_defaults else {}
    blocked: set[str] = set()
    steps: dict[str, StepSpec] = {}
    unchecked = _unchecked_names(doc)
    for order, (name, raw) in enumerate(raw_steps.items()):
        if not isinstance(raw, Mapping) or any(p[:2] == ("steps", name) for p in broken):
            blocked.add(name)
            continue
        sets = opted_sets(raw.get("defaults"))
        base, sources = step_defaults(defaults, raw["type"], raw["input"], sets)
        merged, from_defaults = deep_merge(base, raw["input"])
        steps[name] = StepSpec(
            name=name, type=raw["type"], input=merged, needs=tuple(raw.get("needs", ())),
            # an axis from a variable stands as one value here: the full load reads it
            matrix=tuple((k, tuple(v) if isinstance(v, list) else (v,))
                         for k, v in (raw.get("matrix") or {}).items()),
            foreach=raw.get("foreach"), key=raw.get("key"), when=raw.get("when"),
            timeout=raw.get("timeout"),
            retries=raw.get("retries"), priority=raw.get("priority"), order=order,
            defaulted=frozenset(from_defaults), unchecked=name in unchecked,
            default_sources={p: sources[p] for p in from_defaults if p in sources},
            default_sets=sets)
    if not steps:
        return None
    name = data.get("name")
    spec = PipelineSpec(path=path, name=name if isinstance(name, str) else "",
                        description=None, vars=declared, steps=steps, workflow={}, tags=(),
                        doc=doc)
    scope = _Scope(blocked=frozenset(blocked),
                   names_known=raw_vars is None or isinstance(raw_vars, Mapping),
                   catalog=defaults_ok)
    return spec, scope
