"""Steps -> instances: matrix and foreach expansion, rendered inputs, seeds, fingerprints.

Planning and running both expand steps with these functions and the same growing
`Context`; the only difference is how much of the upstream output is known.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from civflow import catalog
from civflow.check import Checked
from civflow.check.render import (
    base_context,
    comfy_body,
    fanout_name,
    foreach_names,
    instance_record,
    known_instances,
    known_step_view,
    matrix_instances,
    pending_step_view,
    render_field,
    render_tree,
    when_per_instance,
)
from civflow.errors import PipelineInvalid
from civflow.loading.model import PipelineSpec, StepSpec
from civflow.template import Pending, TemplateEngine, is_pending

__all__ = [
    "SEED_MAX",
    "Context",
    "Instance",
    "StepResults",
    "canonical_json",
    "derive_seed",
    "evaluate_when",
    "fingerprint",
    "has_pending",
    "resolve_step",
]

SEED_MAX = 2**32 - 1


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(request: Mapping[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(request).encode()).hexdigest()


def derive_seed(pipeline: str, instance: str, reroll: int = 0) -> int:
    """The seed of an instance that leaves `seed` unset: a function of its identity only.

    Not of its other inputs, so a prompt edit keeps the seed and a before/after
    comparison is like for like; not random, so two runs anywhere (a laptop and CI)
    send the same body and the same externalId, and the API dedupes them. `reroll`
    is the explicit salt `--reroll` bumps (recorded in the lockfile).
    """
    text = f"civflow-seed\x00{pipeline}\x00{instance}\x00{reroll}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") % SEED_MAX


def has_pending(value: Any) -> bool:
    if is_pending(value):
        return True
    if isinstance(value, Mapping):
        return any(has_pending(v) for v in value.values())
    if isinstance(value, list):
        return any(has_pending(v) for v in value)
    return False


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
    reroll: int = 0  # the salt that seed was derived with
    fanout: bool = False  # a foreach placeholder, expanded at run time
    when_pending: bool = False  # its per-instance `when` waits on outputs not known yet

    # Cached: an instance's input never changes, and plan, batching and the executor
    # each ask these of every instance, some more than once.
    @cached_property
    def resolved(self) -> bool:
        return not self.fanout and not has_pending(self.input)

    @property
    def request(self) -> dict[str, Any]:
        return {"type": self.type, "input": self.input, "options": dict(self.options)}

    @cached_property
    def fingerprint(self) -> str | None:
        return fingerprint(self.request) if self.resolved else None


@dataclass(frozen=True)
class StepResults:
    """The known outputs of one upstream step (tokenized), in instance order, with the
    instances' names and matrix values when known (for `steps.<name>.instances`)."""

    outputs: tuple[Mapping[str, Any], ...]
    skipped: bool = False
    names: tuple[str, ...] = ()
    matrices: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def of(cls, instances: Sequence[Instance], outputs: Sequence[Mapping[str, Any]]
           ) -> StepResults:
        return cls(tuple(outputs), names=tuple(i.name for i in instances),
                   matrices=tuple(i.matrix for i in instances))


class Context:
    """The template context of one pipeline, grown step by step as outputs become known.

    One object for the whole plan or run: rebuilding the context per step made both
    quadratic in the number of steps.
    """

    def __init__(self, spec: PipelineSpec, run_id: str | None,
                 engine: TemplateEngine | None = None) -> None:
        self.values: dict[str, Any] = base_context(spec, run_id)
        self._views: dict[str, Any] = {
            name: pending_step_view(name, known_instances(spec, step, engine),
                                    catalog.image_count(step.type, step.input))
            for name, step in spec.steps.items()}
        self.values["steps"] = self._views
        self._spec = spec

    def learn(self, step: str, results: StepResults) -> None:
        """What templates see as `steps.<step>` from now on."""
        spec_step = self._spec.steps[step]
        if results.skipped:
            self._views[step] = pending_step_view(step)
            return
        names = results.names if len(results.names) == len(results.outputs) else tuple(
            f"{step}[{i}]" if spec_step.fans_out else step for i in range(len(results.outputs)))
        matrices = results.matrices if len(results.matrices) == len(names) else \
            tuple({} for _ in names)
        records = [instance_record(name, matrix, output)
                   for name, matrix, output in zip(names, matrices, results.outputs, strict=True)]
        self._views[step] = known_step_view(step, records, single=not spec_step.fans_out)


SeedSource = Callable[[str, str], tuple[int, int]]  # (instance, step) -> (seed, reroll)


def resolve_step(checked: Checked, step: StepSpec, context: Context, seeds: SeedSource
                 ) -> list[Instance]:
    """The instances of `step` given what `context` knows.

    A `foreach` whose list is not known yet yields one fan-out placeholder. A step
    that takes a seed and leaves it unset gets the seed `seeds` gives its instance.
    """
    spec, engine = checked.spec, checked.engine
    values = context.values
    options = step.options(spec.workflow.get("priority"))
    if step.foreach is not None:
        items = render_field(engine, spec, step, "foreach", step.foreach, values)
        if is_pending(items):
            placeholder = render_tree(engine, spec, step, step.input,
                                      {**values, "item": Pending("item"),
                                       "index": Pending("index")})
            return [Instance(fanout_name(step.name), step.name, step.type, placeholder, options,
                             fanout=True)]
        if not isinstance(items, list | tuple):
            raise PipelineInvalid([spec.doc.diagnostic(
                f"step '{step.name}': foreach must give a list, got {type(items).__name__}",
                ("steps", step.name, "foreach"))])
        names = foreach_names(engine, spec, step, values, items)
        combos: list[tuple[str, dict[str, Any], int | None]] = [
            (name, {"item": item, "index": i}, i)
            for i, (name, item) in enumerate(zip(names, items, strict=True))]
    else:
        combos = [(name, {"matrix": matrix} if step.matrix else {}, None)
                  for name, matrix in matrix_instances(step, engine, spec)]
    per_instance = when_per_instance(engine, step)
    out: list[Instance] = []
    for name, extra, index in combos:
        verdict = _truth(render_field(engine, spec, step, "when", str(step.when),
                                      {**values, **extra})) if per_instance else True
        if verdict is False:
            continue  # this instance's `when` is false: it is not part of the step
        rendered = comfy_body(spec, step,
                              render_tree(engine, spec, step, step.input, {**values, **extra}))
        seed: int | None = None
        reroll = 0
        seed_key = catalog.seed_field(step.type, rendered)
        if seed_key is not None and rendered.get(seed_key) is None:
            seed, reroll = seeds(name, step.name)
            rendered = {**rendered, seed_key: seed}
        out.append(Instance(name, step.name, step.type, rendered, options,
                            matrix=extra.get("matrix", {}), index=index, seed=seed,
                            reroll=reroll, when_pending=verdict is None))
    return out


def _truth(value: Any) -> bool | None:
    """A rendered `when`: True/False, or None while it waits on unknown outputs."""
    if is_pending(value):
        return None
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "off", "none")
    return bool(value)


def evaluate_when(checked: Checked, step: StepSpec, context: Context) -> bool | None:
    """True/False, or None when it depends on outputs not known yet.

    A `when` that reads `matrix`, `item` or `index` is decided per instance by
    `resolve_step` (an instance whose `when` is false is left out); for the step as a
    whole it is True. A `when` that fails to evaluate raises PipelineInvalid located at
    the key; it is never taken for "not known yet", so a broken guard can never let a
    paid step run.
    """
    if step.when is None:
        return True
    if isinstance(step.when, bool):
        return step.when
    if when_per_instance(checked.engine, step):
        return True
    return _truth(render_field(checked.engine, checked.spec, step, "when", step.when,
                               context.values))
