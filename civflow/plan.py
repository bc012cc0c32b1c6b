"""DAG + lockfile state -> ordered decisions: what runs, what is cached, and why.

`plan()` is pure: it takes data and returns data. The runner resolves instances
with the same `resolve_step` as results arrive, so plan and run cannot disagree.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from civflow import catalog
from civflow.graph import (
    base_context,
    fanout_name,
    foreach_name,
    matrix_instances,
    pending_step_view,
    render_field,
    render_tree,
    resolve_pending,
)
from civflow.spec.check import Checked
from civflow.spec.model import PipelineSpec, StepSpec
from civflow.template import Pending, is_pending

BLOB_TOKEN = "civflow-blob:sha256:"
CIVFLOW_TAG = "civflow"


class Decision(Enum):
    NEW = "new"
    CACHED = "cached"
    CHANGED = "changed"
    FORCED = "forced"
    SKIPPED = "skipped"

    @property
    def runs(self) -> bool:
        return self in (Decision.NEW, Decision.CHANGED, Decision.FORCED)


@dataclass(frozen=True)
class Prior:
    """What the lockfile says of one instance, as far as planning needs it."""

    fingerprint: str
    request: Mapping[str, Any]  # {"type", "input", "options"} as fingerprinted
    output: Mapping[str, Any]  # blob URLs replaced by blob tokens
    seed: int | None = None
    artifacts_ok: bool = True
    cost: float | None = None


@dataclass(frozen=True)
class Instance:
    """One step instance with its input rendered as far as currently known."""

    name: str
    step: str
    type: str
    input: Mapping[str, Any]  # may hold Pending values while upstreams are unknown
    options: Mapping[str, Any]
    matrix: Mapping[str, Any] = field(default_factory=dict)
    index: int | None = None
    seed: int | None = None  # the seed civflow filled in, if it did
    fanout: bool = False  # a foreach placeholder, expanded at run time

    @property
    def resolved(self) -> bool:
        return not self.fanout and not _has_pending(self.input)

    @property
    def request(self) -> dict[str, Any]:
        return {"type": self.type, "input": self.input, "options": dict(self.options)}

    @property
    def fingerprint(self) -> str | None:
        return fingerprint(self.request) if self.resolved else None


@dataclass(frozen=True)
class PlannedInstance:
    instance: Instance
    decision: Decision
    reasons: tuple[str, ...]
    estimate: float | None

    @property
    def name(self) -> str:
        return self.instance.name


@dataclass(frozen=True)
class Plan:
    pipeline: str
    instances: tuple[PlannedInstance, ...]

    @property
    def estimate(self) -> float:
        return sum(p.estimate or 0.0 for p in self.instances if p.decision.runs)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.instances:
            out[p.decision.value] = out.get(p.decision.value, 0) + 1
        return out


@dataclass(frozen=True)
class PlanOptions:
    force: frozenset[str] = frozenset()  # step names; "*" forces everything
    reroll: frozenset[str] = frozenset()
    only: tuple[str, ...] = ()  # instance globs such as 'upscale[*]'


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(request: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(request).encode()).hexdigest()


def _has_pending(value: Any) -> bool:
    if is_pending(value):
        return True
    if isinstance(value, Mapping):
        return any(_has_pending(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_pending(v) for v in value)
    return False


def tokenize_output(output: Mapping[str, Any], sha_by_blob: Mapping[str, str]) -> dict[str, Any]:
    """An output with every blob URL replaced by a content token (and expiry fields dropped)."""
    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            blob_id = value.get("id")
            out = {k: walk(v) for k, v in value.items()
                   if k not in ("url", "urlExpiresAt", "previewUrl", "previewUrlExpiresAt")}
            if isinstance(blob_id, str) and blob_id in sha_by_blob:
                out["url"] = BLOB_TOKEN + sha_by_blob[blob_id]
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    result: dict[str, Any] = walk(output)
    return result


@dataclass(frozen=True)
class StepResults:
    """The known outputs of one upstream step (tokenized), in instance order."""

    outputs: tuple[Mapping[str, Any], ...]
    skipped: bool = False


def step_context(spec: PipelineSpec, known: Mapping[str, StepResults], run_id: str | None
                 ) -> dict[str, Any]:
    context = base_context(spec, run_id)
    context["steps"] = {name: step_view(step, known.get(name))
                        for name, step in spec.steps.items()}
    return context


def step_view(step: StepSpec, results: StepResults | None) -> dict[str, Any]:
    """What templates see as `steps.<name>`: outputs when known, placeholders otherwise."""
    if results is None or results.skipped:
        return pending_step_view(step.name)
    if step.fans_out:
        return {"outputs": list(results.outputs)}
    return {"output": results.outputs[0] if results.outputs else None,
            "outputs": list(results.outputs)}


def resolve_step(checked: Checked, step: StepSpec, context: Mapping[str, Any],
                 seeds: Mapping[str, int], draw_seed: Callable[[], int] | None
                 ) -> list[Instance]:
    """The instances of `step` given what is known in `context`.

    A `foreach` whose list is not known yet yields one fan-out placeholder. A step
    that takes a seed and leaves it unset gets the recorded seed, else a drawn one
    (or a pending placeholder when `draw_seed` is None).
    """
    spec, engine = checked.spec, checked.engine
    options = step.options(spec.workflow.get("priority"))
    if step.foreach is not None:
        items = render_field(engine, spec, step, "foreach", step.foreach, context)
        if is_pending(items):
            placeholder = render_tree(engine, spec, step, step.input,
                                      {**context, "item": Pending("item"),
                                       "index": Pending("index")})
            return [Instance(fanout_name(step.name), step.name, step.type, placeholder, options,
                             fanout=True)]
        if not isinstance(items, list | tuple):
            from civflow.errors import PipelineInvalid

            raise PipelineInvalid([spec.doc.diagnostic(
                f"step '{step.name}': foreach must give a list, got {type(items).__name__}",
                ("steps", step.name, "foreach"))])
        combos: list[tuple[str, dict[str, Any], int | None]] = [
            (foreach_name(step.name, i), {"item": item, "index": i}, i)
                  for i, item in enumerate(items)]
    else:
        combos = [(name, {"matrix": values} if step.matrix else {}, None)
                  for name, values in matrix_instances(step)]
    out: list[Instance] = []
    for name, extra, index in combos:
        rendered = render_tree(engine, spec, step, step.input, {**context, **extra})
        seed = None
        seed_key = catalog.seed_field(step.type, rendered)
        if seed_key is not None and rendered.get(seed_key) is None:
            if name in seeds:
                seed = seeds[name]
            elif draw_seed is not None:
                seed = draw_seed()
            rendered = {**rendered, seed_key: seed if seed is not None else Pending("seed")}
        out.append(Instance(name, step.name, step.type, rendered, options,
                            matrix=extra.get("matrix", {}), index=index, seed=seed))
    return out


def evaluate_when(checked: Checked, step: StepSpec, context: Mapping[str, Any]) -> bool | None:
    """True/False, or None when it depends on outputs not known yet."""
    if step.when is None:
        return True
    if isinstance(step.when, bool):
        return step.when
    value = render_field(checked.engine, checked.spec, step, "when", step.when, context)
    if is_pending(value):
        return None
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "off", "none")
    return bool(value)


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted paths that differ between two requests, e.g. ['input.prompt']."""
    out: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}.{key}" if path else key)
        elif a != b:
            out.append(path or "(everything)")
    walk(old, new, "")
    return out


_MISSING = object()


def estimate_instance(instance: Instance) -> float | None:
    """Buzz for one instance by the catalog's published formulas; None if unknowable."""
    try:
        return float(catalog.estimate_cost(instance.type, resolve_pending(instance.input)))
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def glob_match(name: str, pattern: str) -> bool:
    """Shell-style `*` and `?`, with brackets literal so 'upscale[*]' reads as written."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


def selected_steps(checked: Checked, only: Sequence[str]) -> set[str]:
    """Steps matched by --only globs (by step or instance name), plus all they need."""
    matched = {name for name in checked.spec.steps for g in only
               if glob_match(name, g) or glob_match(name, g.split("[", 1)[0])}
    return checked.graph.upstream_closure(matched)


def plan(checked: Checked, priors: Mapping[str, Prior] | None = None,
         options: PlanOptions | None = None, *, run_id: str | None = None) -> Plan:
    """Decide, for every instance in dependency order, whether it runs and why."""
    spec, graph = checked.spec, checked.graph
    priors = priors or {}
    options = options or PlanOptions()
    forced = graph.downstream_closure(
        set(spec.steps) if "*" in options.force else set(options.force) & set(spec.steps))
    rerolled = graph.downstream_closure(set(options.reroll) & set(spec.steps))
    wanted = selected_steps(checked, options.only) if options.only else set(spec.steps)
    seeds = {name: p.seed for name, p in priors.items()
             if p.seed is not None and name.split("[", 1)[0] not in options.reroll}
    known: dict[str, StepResults] = {}
    running: set[str] = set()  # steps with at least one instance that runs
    skipped: set[str] = set()
    out: list[PlannedInstance] = []
    # One context, updated as steps become known: rebuilding it per step made plan()
    # quadratic in the number of steps (10,000 chained steps took minutes).
    context = step_context(spec, known, run_id)
    views: dict[str, Any] = context["steps"]
    for name in graph.order:
        if name not in wanted:
            continue
        step = spec.steps[name]
        upstream = graph.upstream(name)
        dead = [u for u in upstream if u in skipped]
        verdict = None if dead else evaluate_when(checked, step, context)
        instances = resolve_step(checked, step, context, seeds, None)
        if dead or verdict is False:
            why = f"upstream {dead[0]} is skipped" if dead else f"when: {step.when} is false"
            skipped.add(name)
            known[name] = StepResults((), skipped=True)
            views[name] = step_view(step, known[name])
            out += [PlannedInstance(i, Decision.SKIPPED, (why,), None) for i in instances]
            continue
        outputs: list[Mapping[str, Any]] = []
        for inst in instances:
            prior = priors.get(inst.name)
            if inst.fanout:  # the fan-out stands for every earlier `step[i]`
                prior = next((p for n, p in priors.items() if n.startswith(f"{name}[")), None)
            planned = _decide(inst, prior, name in forced, name in rerolled,
                              [u for u in upstream if u in running], step)
            if verdict is None:
                planned = PlannedInstance(planned.instance, planned.decision,
                                          (*planned.reasons, "when is evaluated at run time"),
                                          planned.estimate)
            out.append(planned)
            if planned.decision.runs:
                running.add(name)
            prior = priors.get(inst.name)
            if planned.decision is Decision.CACHED and prior is not None:
                outputs.append(prior.output)
        if name not in running and outputs and len(outputs) == len(instances):
            known[name] = StepResults(tuple(outputs))
            views[name] = step_view(step, known[name])
    return Plan(spec.name, tuple(out))


def _decide(inst: Instance, prior: Prior | None, forced: bool, rerolled: bool,
            running_upstream: Sequence[str], step: StepSpec) -> PlannedInstance:
    estimate = estimate_instance(inst)
    if forced:
        return PlannedInstance(inst, Decision.FORCED, ("--force",), estimate)
    if rerolled:
        return PlannedInstance(inst, Decision.FORCED, ("--reroll draws a new seed",), estimate)
    if inst.fanout:
        fanout = (f"one instance per element of {str(step.foreach).strip()}, "
                  "known at run time")
        if prior is not None and running_upstream:
            return PlannedInstance(inst, Decision.CHANGED,
                                   (f"upstream {running_upstream[0]}", fanout), estimate)
        return PlannedInstance(inst, Decision.NEW, (fanout,), estimate)
    if prior is None:
        reasons: tuple[str, ...]
        reasons = ("not in the lockfile",)
        if not inst.resolved and running_upstream:
            reasons = (f"upstream {running_upstream[0]}", "not in the lockfile")
        return PlannedInstance(inst, Decision.NEW, reasons, estimate)
    if not inst.resolved:
        ups = tuple(f"upstream {u}" for u in running_upstream) or ("inputs not known yet",)
        return PlannedInstance(inst, Decision.CHANGED, ups, estimate)
    if inst.fingerprint != prior.fingerprint:
        fields = changed_fields(prior.request, inst.request) or ["fingerprint"]
        return PlannedInstance(inst, Decision.CHANGED, tuple(fields), estimate)
    if not prior.artifacts_ok:
        return PlannedInstance(inst, Decision.CHANGED, ("artifacts missing or modified",),
                               estimate)
    return PlannedInstance(inst, Decision.CACHED, ("fingerprint matches the lockfile",), 0.0)


def workflow_body(spec: PipelineSpec, inst: Instance, *, run_id: str | None,
                  external_id: str | None, input_override: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The WorkflowTemplate civflow submits for one instance."""
    step: dict[str, Any] = {"$type": inst.type, "name": inst.step,
                            "input": resolve_pending(input_override or inst.input)}
    step.update(inst.options)
    tags = [*spec.tags, f"{CIVFLOW_TAG}:{spec.name}"]
    tags.append(f"{CIVFLOW_TAG}-run:{run_id}" if run_id else f"{CIVFLOW_TAG}-run:<pending: run.id>")
    body: dict[str, Any] = {"steps": [step], "tags": tags, "currencies": []}
    for key, value in spec.workflow.items():
        if key != "priority":
            body[key] = value
    metadata = dict(body.get("metadata") or {})
    metadata["civflow"] = {"pipeline": spec.name, "instance": inst.name}
    body["metadata"] = metadata
    if external_id is not None:
        body["externalId"] = external_id
    return body


def instance_names(instances: Iterable[PlannedInstance]) -> list[str]:
    return [p.name for p in instances]
