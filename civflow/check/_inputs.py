"""Each step's input rendered with what is known before a run, checked against the catalog.

Values only known at run time are placeholders: present for `required`, not looked
into. `when` and `foreach` are rendered too, so a guard that raises fails here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from civflow import catalog
from civflow.catalog import IssueKind
from civflow.check.render import (
    base_context,
    comfy_body,
    foreach_names,
    known_instances,
    matrix_combos,
    matrix_instances,
    pending_step_view,
    render_field,
    render_tree,
)
from civflow.errors import Diagnostic, PipelineInvalid, Severity
from civflow.keys import KeyPath
from civflow.loading.model import PipelineSpec, StepSpec
from civflow.template import Pending, TemplateEngine, is_pending

UNCHECKED_HINT = "if it is newer than civflow, add 'unchecked: true' to the step"


def _opaque(value: object) -> bool:
    return is_pending(value) or (isinstance(value, str) and "{{" in value)


_UNKNOWN = Pending("a template with an error")


def _masked(value: Any, step: str, bad: set[tuple[str, KeyPath]], path: KeyPath = ()) -> Any:
    """The input with every template that has an error replaced by an unknown value."""
    if (step, path) in bad:
        return _UNKNOWN
    if isinstance(value, Mapping):
        if any((step, (*path, key)) in bad and isinstance(key, str) and "{" in key
               for key in value):
            return _UNKNOWN  # a key with an error: nothing here can be checked
        return {k: _masked(v, step, bad, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, step, bad, (*path, i)) for i, v in enumerate(value)]
    return value


def check_inputs(spec: PipelineSpec, engine: TemplateEngine, bad: set[tuple[str, KeyPath]],
                  blocked: frozenset[str]) -> list[Diagnostic]:
    """Render each instance with what is known now and check it against the catalog."""
    out: list[Diagnostic] = []
    context = base_context(spec, None)
    # The instances a matrix step will have are known now: a selection among them that
    # cannot match is an error before the run, as in the plan.
    context["steps"] = {name: pending_step_view(name) for name in blocked}
    context["steps"].update(
        (name, pending_step_view(name, known_instances(spec, step, engine),
                                 catalog.image_count(step.type, step.input)))
        for name, step in spec.steps.items())
    for step in spec.steps.values():
        if step.foreach is not None:
            context_step = {**context, "item": Pending("item"), "index": Pending("index")}
        else:
            context_step = context
        out.extend(_check_guards(spec, engine, step, context, bad))
        masked = _masked(step.input, step.name, bad)
        issues: dict[tuple[KeyPath, str], catalog.InputIssue] = {}
        for values in matrix_combos(step):
            ctx = {**context_step, "matrix": values} if step.matrix else context_step
            if is_pending(masked):
                break
            try:
                rendered = comfy_body(spec, step, render_tree(engine, spec, step, masked, ctx))
            except PipelineInvalid as exc:
                out.extend(exc.diagnostics)
                break
            if not isinstance(rendered, Mapping):
                continue
            for issue in catalog.check_input(step.type, rendered, opaque=_opaque):
                issues.setdefault((issue.path, issue.message), issue)
        if step.unchecked:
            out.append(_unchecked_note(spec, step, list(issues.values())))
        else:
            out.extend(_issue_diagnostic(spec, step, issue) for issue in issues.values())
    return out


def _check_guards(spec: PipelineSpec, engine: TemplateEngine, step: StepSpec,
                  context: Mapping[str, Any], bad: set[tuple[str, KeyPath]]) -> list[Diagnostic]:
    """Render `foreach`, its `key` and `when` with what is known now: `{{ 1/0 }}` in a
    guard is an error here, not a surprise after the steps before it were paid for."""
    out: list[Diagnostic] = []
    for field, text in (("foreach", step.foreach), ("when", step.when)):
        if not isinstance(text, str) or (step.name, (f"<{field}>",)) in bad:
            continue
        try:
            if field == "when":
                # A `when` of a matrix or foreach step is decided per instance, with
                # `matrix` / `item` in scope: every combination is tried here.
                scopes = [{**context, "item": Pending("item"), "index": Pending("index")}
                          ] if step.foreach is not None else \
                    [{**context, "matrix": values} for values in matrix_combos(step)] \
                    if step.matrix else [context]
                for scope in scopes:
                    render_field(engine, spec, step, field, text, scope)
                continue
            value = render_field(engine, spec, step, field, text, context)
            if field == "foreach" and not is_pending(value) and \
                    not isinstance(value, list | tuple):
                raise PipelineInvalid([spec.doc.diagnostic(
                    f"step '{step.name}': foreach must give a list, got "
                    f"{type(value).__name__}", ("steps", step.name, "foreach"),
                    hint="write a lone expression, \"{{ steps.x.output.images }}\", so "
                         "it keeps its list type")])
            if field == "foreach" and isinstance(value, list | tuple) and \
                    (step.name, ("<key>",)) not in bad:
                foreach_names(engine, spec, step, context, value)
        except PipelineInvalid as exc:
            out.extend(exc.diagnostics)
    if step.matrix and step.key is not None and (step.name, ("<key>",)) not in bad:
        try:
            matrix_instances(step, engine, spec)
        except PipelineInvalid as exc:
            out.extend(exc.diagnostics)
    return out


def _unchecked_note(spec: PipelineSpec, step: StepSpec, issues: list[catalog.InputIssue]
                    ) -> Diagnostic:
    """The one visible line for a step whose input is sent as written."""
    where = ("steps", step.name, "unchecked")
    if not issues:
        return spec.doc.diagnostic(
            f"step '{step.name}' is marked unchecked, but civflow's catalog knows its input "
            "and finds no problem", where, key=True,
            hint="remove 'unchecked: true' so that validate checks this step",
            severity=Severity.WARNING)
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return spec.doc.diagnostic(
        f"step '{step.name}' is unchecked: its input is sent as written", where, key=True,
        hint=f"civflow's catalog says: {issues[0].message}{more}", severity=Severity.WARNING)


def _issue_diagnostic(spec: PipelineSpec, step: StepSpec, issue: catalog.InputIssue
                      ) -> Diagnostic:
    path = tuple(issue.path)
    # Point at the key for unknown fields, at the value otherwise.
    key = issue.kind is IssueKind.UNKNOWN_FIELD and bool(path) and _exists(step.input, path)
    while path and not _exists(step.input, path):
        path = path[:-1]
    where_path: KeyPath
    if issue.kind is IssueKind.UNKNOWN_TYPE:
        where_path, key = ("steps", step.name, "type"), False
    elif not path:
        # A field missing from the input as a whole: point at the 'input:' key itself.
        where_path, key = ("steps", step.name, "input"), True
    else:
        where_path = spec.input_path(step.name, path)
    hint = issue.hint or _fallback_hint(issue)
    if where_path[0] == "defaults" and issue.kind is IssueKind.UNKNOWN_FIELD and not hint:
        fields = [str(f) for f in (issue.expected or ())]
        shown = ", ".join(fields[:10]) + (", ..." if len(fields) > 10 else "")
        entry = where_path[:len(where_path) - len(path)]
        source = f"defaults '{entry[1]}'" if len(entry) == 2 else \
            f"the default set '{entry[2]}' ('{entry[3]}')"
        # A type-wide default that fits another shape is left out (check._fit_defaults):
        # what is reported is a scoped entry's misfit, or a field no shape takes.
        hint = (f"it comes from {source}; this shape takes {shown}: move it to the "
                f"'{step.type}/<engine>:' entry of the engine that takes it"
                if "/" in str(entry[-1]) else
                f"it comes from {source}; no {step.type} shape takes it, and this one takes "
                f"{shown}")
        return spec.doc.diagnostic(f"step '{step.name}': {issue.message}", where_path,
                                   key=key, hint=hint, severity=issue.severity)
    if issue.is_unknown_name and not issue.suggestions:
        hint = f"{hint}; {UNCHECKED_HINT}" if hint else UNCHECKED_HINT
    if issue.kind is IssueKind.RUN_TIME_VARIANT:
        hint = "the API checks this input when the step runs"
    return spec.doc.diagnostic(f"step '{step.name}': {issue.message}", where_path, key=key,
                               hint=hint, severity=issue.severity)


def _fallback_hint(issue: catalog.InputIssue) -> str | None:
    """A hint for catalog findings that come without one, from the finding's data."""
    if issue.kind is IssueKind.MISSING_FIELD and issue.field:
        parent = next((p for p in reversed(issue.path) if isinstance(p, str)), None)
        if parent is not None:
            return f"add '{issue.field}:' under '{parent}:'"
        return f"add '{issue.field}:' to the step's input (or to defaults: for its type)"
    return None


def _exists(value: Any, path: KeyPath) -> bool:
    for part in path:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            value = value[part]
        else:
            return False
    return True


# -- steps as written --------------------------------------------------------------------
