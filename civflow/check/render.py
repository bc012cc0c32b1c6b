"""Templates rendered where they stand in the pipeline file: errors located, placeholders kept.

Here, in check/, because the checks render first (with placeholders, before anything
runs); expansion (instances as outputs become known), plan, request, grouping and the
runner render with the same functions, from the layers above.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from civflow.catalog import comfy
from civflow.errors import Diagnostic, Location, PipelineInvalid
from civflow.keys import KeyPath
from civflow.loading.model import PipelineSpec, StepSpec
from civflow.template import (
    MAX_INCLUDE_BYTES,
    LookupFailed,
    Pending,
    TemplateEngine,
    TemplateFailed,
)


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


def template_diagnostic(spec: PipelineSpec, doc_path: KeyPath, exc: TemplateFailed,
                        message: str, *, key: bool = False) -> Diagnostic:
    """The diagnostic of a template error: in the pipeline file, or, for an error inside
    an included template, in that file (where the mistake is), naming the include."""
    return read_diagnostic(spec, doc_path, message, line=exc.line, key=key, file=exc.file,
                           col=exc.col, hint=exc.hint)


def read_diagnostic(spec: PipelineSpec, doc_path: KeyPath, message: str, *, line: int,
                    key: bool = False, file: str | None = None, col: int | None = None,
                    needle: str | None = None, hint: str | None = None) -> Diagnostic:
    """A finding about what the template at `doc_path` reads at `line`: of the template
    itself, located in the pipeline file; of a file it includes (`file`), located in that
    file at `col`, else at `needle` on that line, else at the line's text, and naming the
    include."""
    if file is None:
        return spec.doc.diagnostic(message, location=template_location(spec, doc_path, line,
                                                                        key=key), hint=hint)
    included_from = template_location(spec, doc_path, 1, key=key)
    shown = os.path.relpath(file) if os.path.isabs(file) else file
    try:
        with open(file, encoding="utf-8") as handle:
            lines = handle.read(MAX_INCLUDE_BYTES).splitlines()
    except (OSError, UnicodeDecodeError):
        lines = []
    text = lines[line - 1] if 0 < line <= len(lines) else None
    if col is None:
        found = text.find(needle) if text is not None and needle else -1
        col = found + 1 if found >= 0 else \
            len(text) - len(text.lstrip()) + 1 if text is not None else 1
    return Diagnostic(f"{message} (included from {included_from})",
                      Location(shown, line, col), hint, source_line=text)


def value_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if type(value) is int:  # what json.dumps writes, without its cost (a bool is not int)
        return str(value)
    return json.dumps(value, sort_keys=True)


def matrix_instances(step: StepSpec, engine: TemplateEngine | None = None,
                     spec: PipelineSpec | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(instance name, matrix values) for each combination, in the order written.

    An instance is `step[a=1,b=x]`, or `step[KEY]` when the step has a `key:` template
    (rendered over the vars and `matrix`): a short name chosen by the author instead of
    whole scene texts. Two combinations with one key are a located error. A keyed step
    needs the engine and spec to render its key.
    """
    if not step.matrix:
        return [(step.name, {})]
    if step.key is None:
        # Each axis value is written once, not once per combination it is part of.
        names = (f"{step.name}[{','.join(parts)}]" for parts in itertools.product(
            *([f"{axis}={value_text(v)}" for v in values] for axis, values in step.matrix)))
        return list(zip(names, matrix_combos(step), strict=True))
    if engine is None or spec is None:
        raise ValueError(f"step {step.name!r} names its instances by a key: pass engine and spec")
    context = base_context(spec, None)
    out: list[tuple[str, dict[str, Any]]] = []
    first: dict[str, dict[str, Any]] = {}
    for values in matrix_combos(step):
        label = _checked_key(spec, step, render_field(
            engine, spec, step, "key", step.key, {**context, "matrix": values}))
        if label in first:
            raise PipelineInvalid([spec.doc.diagnostic(
                f"step '{step.name}': key gives {label!r} for both "
                f"({_combo_text(first[label])}) and ({_combo_text(values)})",
                ("steps", step.name, "key"),
                hint="a matrix key must tell every combination apart: use every "
                     "matrix value that varies, e.g. \"{{ matrix.a }}-{{ matrix.b }}\"")])
        first[label] = values
        out.append((f"{step.name}[{label}]", values))
    return out


def matrix_combos(step: StepSpec) -> list[dict[str, Any]]:
    """Every combination of a step's matrix values, in the order written ([{}] without)."""
    names = [name for name, _ in step.matrix]
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(values for _, values in step.matrix))]


def _combo_text(values: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={value_text(v)}" for k, v in values.items())


# A readable item (a short plain string or number) names its instance as it is.
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@+-]{0,39}$")


def content_key(item: Any) -> str:
    """The default name of a foreach item: itself when short and plain ('front view',
    '42'), else 10 hex digits of the hash of its content. Never its position, so adding
    an item at the top of a list renames (and re-runs) nothing else."""
    if isinstance(item, str | int) and not isinstance(item, bool):
        text = str(item)
        if _PLAIN_KEY.match(text):
            return text
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:10]


# The fields of one entry of `steps.<name>.instances`; the entry is recognised by them.
INSTANCE_FIELDS = frozenset({"key", "name", "matrix", "output"})
# The fields of one entry of `steps.<name>.images`: one image, and the instance it is of.
IMAGE_FIELDS = frozenset({"key", "name", "matrix", "image"})
# What `steps.<name>` offers besides its instance keys (these win over a key of that name).
STEP_VIEW_FIELDS = ("output", "outputs", "instances", "images")
# Names a `when` reads when it is decided per instance rather than once for the step.
PER_INSTANCE_NAMES = frozenset({"matrix", "item", "index"})


def instance_key(name: str) -> str:
    """`shot[mug-marble]` -> `mug-marble`; a step with one instance is keyed by its name."""
    head, bracket, rest = name.partition("[")
    return rest[:-1] if bracket and rest.endswith("]") else head


def instance_record(name: str, matrix: Mapping[str, Any], output: Any) -> dict[str, Any]:
    """One entry of `steps.<name>.instances`: who the instance is, and what it made."""
    return {"key": instance_key(name), "name": name, "matrix": dict(matrix), "output": output}


def image_key(key: str, index: int, count: int) -> str:
    """The key of image `index` of an instance keyed `key` that made `count` images:
    `front-0`, `front-1`, …, or `front` itself when it made one."""
    return key if count == 1 else f"{key}-{index}"


def image_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """`steps.<name>.images`: every image of every instance, in instance order, each as
    {key, name, matrix, image}; the key is the instance's and the image's position."""
    out: list[dict[str, Any]] = []
    for record in records:
        output = record["output"]
        images = output.get("images") if isinstance(output, Mapping) else None
        if not isinstance(images, list):
            continue
        out += [{"key": image_key(str(record["key"]), i, len(images)), "name": record["name"],
                 "matrix": record["matrix"], "image": image} for i, image in enumerate(images)]
    return out


def record_key(item: Any) -> str | None:
    """The upstream key an item of `steps.<name>.instances` or `.images` carries, else None."""
    if isinstance(item, Mapping) and set(item) in (INSTANCE_FIELDS, IMAGE_FIELDS) and \
            isinstance(item.get("key"), str) and item["key"]:
        return str(item["key"])
    return None


def when_per_instance(engine: TemplateEngine, step: StepSpec) -> bool:
    """True when a step's `when` reads `matrix`, `item` or `index`: it is then decided
    for each instance (like a matrix job's `if`), not once for the step."""
    if not isinstance(step.when, str) or not (step.matrix or step.foreach is not None):
        return False
    try:
        names = engine.analyse(step.when).names
    except TemplateFailed:
        return False  # reported by the checks; rendering it again reports it located
    return bool(names & PER_INSTANCE_NAMES)


def foreach_names(engine: TemplateEngine, spec: PipelineSpec, step: StepSpec,
                  context: Mapping[str, Any], items: Sequence[Any]) -> list[str]:
    """The instance names of a foreach: `step[key]`, the key from the step's `key:`
    template, the upstream key an item of `steps.<name>.instances` carries, or
    `content_key`; a repeated key gets `~2`, `~3`, … in list order."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        if step.key is None:
            key = record_key(item) or content_key(item)
        else:
            value = render_field(engine, spec, step, "key", step.key,
                                 {**context, "item": item, "index": index})
            key = _checked_key(spec, step, value)
        seen[key] = seen.get(key, 0) + 1
        names.append(f"{step.name}[{key}]" if seen[key] == 1 else
                     f"{step.name}[{key}~{seen[key]}]")
    return names


def _checked_key(spec: PipelineSpec, step: StepSpec, value: Any) -> str:
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    problem = None if text.strip() else f"gives {type(value).__name__}, not a string"
    if problem is None and len(text) > 64:
        problem = f"gives {len(text)} characters; a key is at most 64"
    if problem is None:
        bad = next((c for c in text if ord(c) < 32 or c in "[]"), None)
        problem = f"gives a key with {bad!r} in it" if bad is not None else None
    if problem is not None:
        raise PipelineInvalid([spec.doc.diagnostic(
            f"step '{step.name}': key {problem}", ("steps", step.name, "key"),
            hint="a key names one instance: a short text such as \"{{ item.sku }}\" "
                 "(a foreach) or \"s{{ matrix.strength }}-{{ matrix.seed }}\" (a matrix)")])
    return text


_FANOUT_OF = re.compile(r"^\s*\{\{\s*steps\.([a-z][a-z0-9_]*)\."
                        r"(outputs|instances|images|output\.images)\s*\}\}\s*$")


def fanout_source(step: StepSpec) -> tuple[str, str] | None:
    """(upstream step, what of it) when a step's `foreach` is a whole list of another
    step, `{{ steps.X.outputs }}`, `.instances`, `.images` or `.output.images`: its size
    then follows from the upstream's instances (and, for images, how many each makes)."""
    match = _FANOUT_OF.match(step.foreach) if isinstance(step.foreach, str) else None
    return (match.group(1), match.group(2)) if match else None


def fanout_name(step: str) -> str:
    return f"{step}[*]"


def base_context(spec: PipelineSpec, run_id: str | None) -> dict[str, Any]:
    context: dict[str, Any] = dict(spec.vars)
    context["pipeline"] = {"name": spec.name}
    context["run"] = {"id": run_id if run_id is not None else Pending("run.id")}
    return context


def select_record(step: str, records: Sequence[Mapping[str, Any]], wanted: Mapping[Any, Any]
                  ) -> Mapping[str, Any]:
    """The one instance of `step` whose matrix values are those of `wanted`
    (`steps.shot[{"product": "mug", "bg": "marble"}]`); axes with one value may be left
    out. None matching, or several, is an error of the template that asked."""
    matches = [r for r in records if all(axis in r["matrix"] and same_value(
        r["matrix"][axis], value) for axis, value in wanted.items())]
    if len(matches) == 1:
        return matches[0]
    asked = ", ".join(f"{axis}={json.dumps(value, default=str)}"
                      for axis, value in wanted.items())
    if not matches:
        axes: dict[str, list[Any]] = {}
        for r in records:
            for axis, value in r["matrix"].items():
                if not any(same_value(v, value) for v in axes.setdefault(str(axis), [])):
                    axes[str(axis)].append(value)
        unknown = [str(a) for a in wanted if str(a) not in axes]
        why = (f"it has no matrix axis {unknown[0]!r}" if unknown and axes else
               "it has no matrix" if not axes else "none of its instances has those values")
        held = "; ".join(f"{axis}: {', '.join(value_text(v) for v in values[:8])}"
                         for axis, values in axes.items())
        raise LookupFailed(f"step '{step}' has no instance with {asked}: {why}",
                           hint=f"its matrix: {held}" if axes else
                           f"select its instances by key, steps.{step}['KEY']")
    shown = ", ".join(str(r["key"]) for r in matches[:4]) + (", ..." if len(matches) > 4 else "")
    raise LookupFailed(
        f"steps.{step}[{{{asked}}}] matches {len(matches)} instances ({shown})",
        hint="name every axis that has more than one value; to take several, select from "
             f"steps.{step}.instances")


def same_value(have: Any, wanted: Any) -> bool:
    """Matrix values compare as written: 1 is not "1", and true is not 1."""
    if isinstance(have, bool) or isinstance(wanted, bool):
        return have is wanted
    if isinstance(have, str) != isinstance(wanted, str):
        return False
    return bool(have == wanted)


class _PendingView(dict[str, Any]):
    """`steps.<name>` while its outputs are unknown: any key is a placeholder too."""

    def __init__(self, step: str, known: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
                 images: int | None = None) -> None:
        super().__init__({field: Pending(f"steps.{step}.{field}") for field in STEP_VIEW_FIELDS})
        self._step = step
        self._records: list[dict[str, Any]] | None = None
        if known is not None:  # who the instances are is known; what they make is not
            self._records = [instance_record(name, matrix, Pending(
                f"steps.{step}[{instance_key(name)!r}]")) for name, matrix in known]
            self["instances"] = self._records
            if images is not None:  # and how many images each makes
                self["images"] = [
                    {"key": image_key(str(r["key"]), i, images), "name": r["name"],
                     "matrix": r["matrix"], "image": Pending(
                         f"steps.{step}[{r['key']!r}].images[{i}]")}
                    for r in self._records for i in range(images)]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, Mapping):
            if self._records is None:
                return Pending(f"steps.{self._step}[{_picked(key)}]")
            return select_record(self._step, self._records, key)["output"]
        return super().__getitem__(key)

    def __missing__(self, key: object) -> Pending:
        return Pending(f"steps.{self._step}[{key!r}]")


class _KnownView(dict[str, Any]):
    """`steps.<name>` once its outputs are known (see `known_step_view`)."""

    def __init__(self, content: Mapping[str, Any], step: str) -> None:
        super().__init__(content)
        self._step = step

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, Mapping):
            return select_record(self._step, self["instances"], key)["output"]
        return super().__getitem__(key)


def _picked(wanted: Mapping[Any, Any]) -> str:
    return "{" + ", ".join(f"{k!r}: {v!r}" for k, v in wanted.items()) + "}"


def known_instances(spec: PipelineSpec, step: StepSpec, engine: TemplateEngine | None
                    ) -> list[tuple[str, dict[str, Any]]] | None:
    """The instances a step will have, when known before it runs: a matrix step's (and a
    single step's), so `steps.X.instances | selectattr('key', ...)` names the instances
    downstream in the plan already. Not a foreach's (its list comes from outputs), nor
    those of a step whose per-instance `when` may leave some out."""
    if engine is None or step.foreach is not None or when_per_instance(engine, step):
        return None
    try:
        return matrix_instances(step, engine, spec)
    except PipelineInvalid:
        return None  # reported, located, when the step itself is rendered


def pending_step_view(step: str, known: Sequence[tuple[str, Mapping[str, Any]]] | None = None,
                      images: int | None = None) -> dict[str, Any]:
    """`steps.<step>` before it ran; `known` (name, matrix values) of its instances, when
    they are known before the run, fill `.instances` with placeholder outputs, and with
    `images` (how many each makes, when its input fixes it) `.images` too."""
    return _PendingView(step, known, images)


def known_step_view(step: str, records: Sequence[Mapping[str, Any]], *, single: bool
                    ) -> dict[str, Any]:
    """`steps.<name>` once its outputs are known: `.outputs` in instance order,
    `.instances` with each instance's key and matrix values, `.images` (every image
    of every instance, keyed by instance and position), `["KEY"]` or
    `[{axis: value}]` for one instance's output, and `.output` for a step with one
    instance."""
    view: dict[str, Any] = {} if single else {str(r["key"]): r["output"] for r in records}
    view["outputs"] = [r["output"] for r in records]
    view["instances"] = list(records)
    view["images"] = image_records(records)
    if single:
        view["output"] = records[0]["output"] if records else None
    else:
        view.pop("output", None)  # an instance keyed `output` is not `.output`
    return _KnownView(view, step)


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
        raise PipelineInvalid([template_diagnostic(
            spec, doc_path, exc, f"in step '{step.name}': {exc.message}", key=key)]) from None


def render_field(engine: TemplateEngine, spec: PipelineSpec, step: StepSpec, field: str,
                 text: str, context: Mapping[str, Any]) -> Any:
    """Render `foreach` or `when` of a step."""
    try:
        return engine.render(text, context)
    except TemplateFailed as exc:
        raise PipelineInvalid([template_diagnostic(
            spec, ("steps", step.name, field), exc,
            f"in step '{step.name}' {field}: {exc.message}")]) from None


def resolve_pending(value: Any) -> Any:
    """Turn Pending objects into their placeholder strings, for display and JSON."""
    if isinstance(value, Pending):
        return str(value)
    if isinstance(value, Mapping):
        return {k: resolve_pending(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [resolve_pending(v) for v in value]
    return value


def comfy_body(spec: PipelineSpec, step: StepSpec, rendered: Any) -> Any:
    """A `comfy` step written as `{workflow: FILE, set: {title: {input: value}}, …}`
    becomes the API's body (`comfyWorkflow`: the file's graph with those inputs set).
    The whole graph is in the body, so editing the file changes the fingerprint.
    Unknown titles and inputs are located errors under the step's `set`."""
    if step.type != "comfy" or not isinstance(rendered, Mapping) or \
            not isinstance(rendered.get("workflow"), str):
        return rendered
    name = rendered["workflow"]
    try:
        graph = _workflow_file(spec.base_dir.resolve(), name)
    except comfy.ComfyWorkflowError as exc:
        raise PipelineInvalid([spec.doc.diagnostic(
            f"step '{step.name}': {exc}", spec.input_path(step.name, ("workflow",)),
            hint="export the workflow from ComfyUI with 'Save (API format)' next to the "
                 "pipeline")]) from None
    overrides = rendered.get("set") or {}
    if not isinstance(overrides, Mapping):
        overrides = {}
    graph, issues = comfy.apply_titles(graph, overrides)
    if issues:
        raise PipelineInvalid([spec.doc.diagnostic(
            f"step '{step.name}': {issue.message}", spec.input_path(step.name, issue.path),
            key=True, hint=issue.hint) for issue in issues])
    options = {k: v for k, v in rendered.items() if k not in ("workflow", "set")}
    return comfy.comfy_input(graph, **options)


@functools.lru_cache(maxsize=32)
def _cached_workflow(folder: Path, name: str, stamp: tuple[int, int]) -> comfy.Workflow:
    del stamp  # part of the cache key only: an edited file is read again
    return comfy.read_workflow(folder, name)


def _workflow_file(folder: Path, name: str) -> comfy.Workflow:
    try:
        st = (folder / name).stat()
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = (-1, -1)
    return copy.deepcopy(_cached_workflow(folder, name, stamp))
