"""Templates rendered where they stand in the pipeline file: errors located, placeholders kept.

Shared by the checks (rendering with placeholders before anything runs) and by
expansion (rendering instances as outputs become known).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from civflow.errors import Location, PipelineInvalid
from civflow.keys import KeyPath
from civflow.load.model import PipelineSpec, StepSpec
from civflow.template import Pending, TemplateEngine, TemplateFailed


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
