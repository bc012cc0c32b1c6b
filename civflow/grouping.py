"""Which instances share a workflow: the one grouping decision `plan`, `render` and `run` use.

Pure: planned instances in, workflows out.

- Batching: instances of one step never depend on each other, so a step's instances
  that run are packed, in plan order, into workflows of up to `size` steps. Packing is
  deterministic (the same plan gives the same batches, so the same batch `externalId`
  on any machine), and never waits to fill a batch: a step's batches are formed the
  moment its instances are known. Different root steps are not mixed, so one slow step
  type never holds up another's results.
- Fusion: a step whose every unknown input is a whole path into the output of an
  instance that runs in the same group (`{{ steps.hero.output.images[0].url }}`,
  `{{ steps.a.outputs[matrix.i].message }}`) joins that instance's workflow, the value
  sent as `{"$ref": "<instance>", "path": "output…"}`, so the orchestrator starts it the
  moment its source succeeds. A step is fused only when all its instances are new (or
  forced), it has no templated `when`, it is not a `foreach` (whose names come from
  the items), and it needs no step outside the group; otherwise it runs as before,
  after its upstream steps, from their real outputs.
"""
from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from civflow import catalog
from civflow.check import Checked
from civflow.check.render import comfy_body, render_tree
from civflow.errors import PipelineInvalid
from civflow.expand import Context, Instance
from civflow.loading.model import StepSpec
from civflow.planning import Decision, Plan, PlannedInstance
from civflow.request import batch_body, set_tag
from civflow.store.journal import external_id, workflow_external_id
from civflow.template import PENDING_MARK, Pending

__all__ = [
    "DEFAULT_BATCH",
    "MAX_BATCH",
    "Batch",
    "Grouping",
    "Ref",
    "apportion",
    "batch_size",
    "batches",
    "foreach_lanes",
    "fused_refs",
    "group_plan",
    "lane_index",
    "rendered_bodies",
    "resolve_refs",
    "with_refs",
    "workflows",
]

# Steps per workflow when neither the pipeline nor `--batch` says (see docs/guide/batching.md).
DEFAULT_BATCH = 20
MAX_BATCH = 100  # the schema's bound: a body and a failure stay small

Where = tuple[str | int, ...]  # a position inside an instance's input

_REF = re.compile(r"^steps\.([a-z][a-z0-9_]*)\.(?:output|outputs\[(\d+)\])"
                  r"((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)$")


@dataclass(frozen=True)
class Ref:
    """An input value taken from another instance's output inside the same workflow."""

    at: Where  # where in the input
    source: str  # the instance (its step's name in the workflow)
    path: str  # into the source step: `output.images[0].url`

    def wire(self) -> dict[str, str]:
        return {"$ref": self.source, "path": self.path}


@dataclass(frozen=True)
class Batch:
    """One workflow: its instances (each a step named after the instance), sources
    before the steps that take their outputs; `refs` for the fused ones."""

    step: str  # the step whose instances start the workflow
    members: tuple[str, ...]
    refs: Mapping[str, tuple[Ref, ...]] = field(default_factory=dict)

    @property
    def fused(self) -> tuple[str, ...]:
        return tuple(n for n in self.members if n in self.refs)

    @property
    def label(self) -> str:
        return f"{self.step} × {len(self.members)}" if len(self.members) > 1 else self.members[0]


def batch_size(configured: int | None) -> int:
    """The batch size in force: the pipeline's key or `--batch`, else the default."""
    if configured is None:
        return DEFAULT_BATCH
    return max(1, min(MAX_BATCH, configured))


def fused_refs(value: Any, running: Mapping[str, Sequence[str | None]],
               at: Where = ()) -> tuple[Ref, ...] | None:
    """Every unknown value of an input as a `Ref` into an instance that runs in the same
    workflow group, or None when something unknown cannot be one: a placeholder inside
    a longer text, a path into a step outside the group or an instance that does not
    run (`running`: step -> its instances in order, None for those that do not run)."""
    if isinstance(value, Pending):
        match = _REF.match(value.ref)
        names = running.get(match.group(1)) if match else None
        if match is None or names is None:
            return None
        index = int(match.group(2) or 0)
        source = names[index] if index < len(names) else None
        if source is None:
            return None
        return (Ref(at, source, "output" + match.group(3)),)
    if isinstance(value, str):
        return None if PENDING_MARK in value else ()
    found: list[Ref] = []
    items: Any = value.items() if isinstance(value, Mapping) else \
        enumerate(value) if isinstance(value, list | tuple) else ()
    for key, item in items:
        if isinstance(key, str) and PENDING_MARK in key:
            return None
        more = fused_refs(item, running, (*at, key))
        if more is None:
            return None
        found += more
    return tuple(found)


def _put(value: Any, at: Where, new: Any) -> Any:
    if not at:
        return new
    head, rest = at[0], at[1:]
    if isinstance(value, Mapping):
        return {k: _put(v, rest, new) if k == head else v for k, v in value.items()}
    return [_put(v, rest, new) if i == head else v for i, v in enumerate(value)]


def with_refs(value: Any, refs: Sequence[Ref]) -> Any:
    """The input as sent in a fused workflow: each ref as `{"$ref", "path"}`."""
    for ref in refs:
        value = _put(value, ref.at, ref.wire())
    return value


_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _follow(root: Any, path: str) -> Any:
    node = root
    for key, index in _PART.findall(path):
        if key:
            if not isinstance(node, Mapping) or key not in node:
                raise LookupError(path)
            node = node[key]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                raise LookupError(path)
            node = node[int(index)]
    return node


def resolve_refs(value: Any, refs: Sequence[Ref], outputs: Mapping[str, Any]) -> Any:
    """The input a fused instance would have had, sent on its own after its sources:
    each ref replaced by the value at its path in the source's recorded (tokenized)
    output, exactly what its template gives once that output is known. Its fingerprint
    is then the one the unfused run records. LookupError when a source has no output."""
    for ref in refs:
        source = outputs[ref.source]
        value = _put(value, ref.at, _follow({"output": source}, ref.path))
    return value


def workflows(planned: Sequence[PlannedInstance], size: int, *,
              upstream: Mapping[str, Collection[str]], guarded: Collection[str] = (),
              fuse: bool = True) -> tuple[Batch, ...]:
    """The workflows the instances that run are submitted in.

    `planned`: every selected instance of the steps concerned, steps in dependency
    order, instances in order (cached ones too: `outputs[i]` counts them);
    `upstream`: each step's upstream steps; `guarded`: steps with a templated `when`.
    A step whose instances wait on a running step is fused into that step's group when
    it can be (see the module docstring); the groups' lanes (a source instance and
    what takes its output) are packed whole into workflows of up to `size` steps.
    """
    size = max(1, size)
    by_step: dict[str, list[PlannedInstance]] = {}
    for p in planned:
        by_step.setdefault(p.instance.step, []).append(p)
    group_of: dict[str, str] = {}  # step -> the root step of its group
    running: dict[str, list[str | None]] = {}
    lanes: dict[str, list[str]] = {}  # root step -> lanes in order, as their first member
    lane_of: dict[str, str] = {}  # instance -> its lane (the lane's first member)
    lane_members: dict[str, list[str]] = {}
    refs: dict[str, tuple[Ref, ...]] = {}
    for step, items in by_step.items():
        runs = [p for p in items if p.decision.runs]
        if not runs:
            continue
        if all(p.instance.resolved for p in runs):
            group_of[step] = step
            running[step] = [p.name if p.decision.runs else None for p in items]
            lanes[step] = [p.name for p in runs]
            for p in runs:
                lane_of[p.name] = p.name
                lane_members[p.name] = [p.name]
            continue
        found = _fusible(step, items, upstream, guarded, running, group_of) if fuse else None
        if found is None or not _fits(found, lane_of, lane_members, size):
            continue  # a lane never outgrows a workflow: the step waits for real outputs
        root = group_of[next(iter(upstream.get(step, ())))]
        group_of[step] = root
        running[step] = [p.name for p in items]
        for p in items:
            refs[p.name] = found[p.name]
            first = lane_of[found[p.name][0].source]
            for ref in found[p.name][1:]:  # one lane: merge the sources' lanes
                other = lane_of[ref.source]
                if other != first:
                    for name in lane_members.pop(other):
                        lane_of[name] = first
                        lane_members[first].append(name)
                    lanes[root].remove(other)
            lane_of[p.name] = first
            lane_members[first].append(p.name)
    order = {p.name: i for i, p in enumerate(planned)}
    out: list[Batch] = []
    for root, firsts in lanes.items():
        current: list[str] = []
        for first in firsts:
            lane = lane_members[first]
            if current and len(current) + len(lane) > size:
                out.append(_batch(root, current, order, refs))
                current = []
            current += lane
        if current:
            out.append(_batch(root, current, order, refs))
    return tuple(out)


def _fits(found: Mapping[str, tuple[Ref, ...]], lane_of: Mapping[str, str],
          lane_members: Mapping[str, list[str]], size: int) -> bool:
    """Whether fusing a step's instances (`found`: each one's refs) keeps every lane
    they join or merge within `size` members."""
    merged: dict[str, str] = {}  # a lane merged into another -> that one
    sizes: dict[str, int] = {}

    def head(lane: str) -> str:
        while lane in merged:
            lane = merged[lane]
        return lane
    for refs in found.values():
        lanes = sorted({head(lane_of[r.source]) for r in refs})
        total = sum(sizes.get(lane, len(lane_members[lane])) for lane in lanes) + 1
        if total > size:
            return False
        for other in lanes[1:]:
            merged[other] = lanes[0]
        sizes[lanes[0]] = total
    return True


def _batch(root: str, names: list[str], order: Mapping[str, int],
           refs: Mapping[str, tuple[Ref, ...]]) -> Batch:
    members = tuple(sorted(names, key=order.__getitem__))  # sources first
    return Batch(root, members, {n: refs[n] for n in members if n in refs})


def _fusible(step: str, items: Sequence[PlannedInstance],
             upstream: Mapping[str, Collection[str]], guarded: Collection[str],
             running: Mapping[str, Sequence[str | None]], group_of: Mapping[str, str]
             ) -> dict[str, tuple[Ref, ...]] | None:
    """Each instance's refs if the whole step can join its upstream's group, else None."""
    ups = set(upstream.get(step, ()))
    roots = {group_of.get(u) for u in ups}
    if not ups or None in roots or len(roots) != 1 or step in guarded:
        return None
    found: dict[str, tuple[Ref, ...]] = {}
    for p in items:
        if p.instance.fanout or p.decision not in (Decision.NEW, Decision.FORCED):
            return None
        mine = fused_refs(p.instance.input, {u: running[u] for u in ups})
        if not mine:
            return None
        found[p.name] = mine
    return found


_IMAGES_OF = re.compile(r"^\s*\{\{\s*steps\.([a-z][a-z0-9_]*)\.output\.images\s*\}\}\s*$")
_LANE = re.compile(r"^[a-z][a-z0-9_]*\[#(\d+)\]$")


def lane_index(name: str) -> int | None:
    """The position of a fused foreach instance named before its item is known."""
    match = _LANE.match(name)
    return int(match.group(1)) if match else None


def foreach_lanes(checked: Checked, step: StepSpec, context: Context,
                  placeholder: PlannedInstance,
                  sources: Mapping[str, Sequence[PlannedInstance]]
                  ) -> list[PlannedInstance] | None:
    """A `foreach` over `steps.X.output.images` of X's one instance, whose `quantity`
    fixes the count: one instance per image, named `step[#i]` until the images (and so
    the instance names) are known, each taking `item` from X's output by `$ref`. None
    when the count is not fixed, X is not X's group root, or an instance needs a seed
    (an unset seed derives from the instance's name, not known yet)."""
    match = _IMAGES_OF.match(str(step.foreach)) if step.foreach is not None else None
    items = sources.get(match.group(1), ()) if match else ()
    if match is None or len(items) != 1 or not items[0].decision.runs:
        return None
    quantity = items[0].instance.input.get("quantity")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or \
            not 0 < quantity <= MAX_BATCH:
        return None
    spec = checked.spec
    options = step.options(spec.workflow.get("priority"))
    out: list[PlannedInstance] = []
    for i in range(quantity):
        item = Pending(f"steps.{match.group(1)}.output.images[{i}]")
        try:
            rendered = comfy_body(spec, step, render_tree(
                checked.engine, spec, step, step.input,
                {**context.values, "item": item, "index": i}))
        except PipelineInvalid:
            return None
        seed_key = catalog.seed_field(step.type, rendered)
        if not isinstance(rendered, Mapping) or \
                (seed_key is not None and rendered.get(seed_key) is None):
            return None
        inst = Instance(f"{step.name}[#{i}]", step.name, step.type, rendered, options,
                        index=i)
        out.append(replace(placeholder, instance=inst, expected=1))
    return out


def batches(planned: Sequence[PlannedInstance], size: int) -> tuple[Batch, ...]:
    """Batching alone: per step, in plan order, up to `size` each (no fusion)."""
    return workflows(planned, size, upstream={}, fuse=False)


@dataclass(frozen=True)
class Grouping:
    """The grouping decision of one plan, made once and read by `plan`, `render` and
    `run`: the workflows submitted up front (batched and fused with the pipeline's
    `batch`), and every instance in them, by name (a fused `foreach`'s lanes, `step[#i]`,
    exist only here). Instances whose inputs wait on outputs that cannot be fused are
    packed by the same rule, `workflows`, once the run knows them."""

    workflows: tuple[Batch, ...]
    instances: Mapping[str, PlannedInstance]


def group_plan(checked: Checked, made: Plan, *, fuse: bool | None = None) -> Grouping:
    """The plan's grouping (`fuse` defaults to the pipeline's, as a run applies it)."""
    fuse = checked.spec.fuse if fuse is None else fuse
    graph = checked.graph
    upstream = {name: frozenset(graph.upstream(name)) for name in checked.spec.steps}
    guarded = frozenset(n for n, s in checked.spec.steps.items() if isinstance(s.when, str))
    size = batch_size(checked.spec.batch)
    planned: list[PlannedInstance] = []
    by_step: dict[str, list[PlannedInstance]] = {}
    context = Context(checked.spec, None)
    for p in made.instances:
        step = checked.spec.steps[p.instance.step]
        lanes = None
        if fuse and size > 1 and p.instance.fanout and len(upstream[step.name]) == 1 and \
                step.name not in made.policy.filtered:
            lanes = foreach_lanes(checked, step, context, p, by_step)
        for q in lanes or [p]:
            planned.append(q)
            by_step.setdefault(q.instance.step, []).append(q)
    return Grouping(workflows(planned, size, upstream=upstream, guarded=guarded,
                              fuse=fuse and size > 1),
                    {q.name: q for q in planned})


def rendered_bodies(checked: Checked, made: Plan, grouping: Grouping
                    ) -> list[tuple[Batch, dict[str, Any]]]:
    """What `civflow render` shows: each workflow of the plan's `grouping` as it will be
    sent, fused inputs as `{"$ref", "path"}` (blob tokens stay tokens: URLs are signed
    at POST), with the externalId, member keys and set tag a run sends (a fused
    workflow's key depends on its sources' keys and is left out)."""
    by_name = {name: p.instance for name, p in grouping.instances.items()}
    fps: dict[str, list[str]] = {}
    for p in made.instances:
        if p.instance.fingerprint is not None:
            fps.setdefault(p.instance.step, []).append(p.instance.fingerprint)
    out: list[tuple[Batch, dict[str, Any]]] = []
    for batch in grouping.workflows:
        members = [(by_name[n], with_refs(by_name[n].input, batch.refs.get(n, ())))
                   for n in batch.members]
        keys = [_key(made, by_name[n]) for n in batch.members]
        known = [k for k in keys if k is not None]
        complete = len(known) == len(keys) and not batch.refs
        out.append((batch, batch_body(
            checked.spec, members, run_id=None,
            external_id=workflow_external_id(list(zip(batch.members, known, strict=True)))
            if complete else None, keys=known if complete else None,
            lookup=set_tag(checked.spec.name, batch.step, fps.get(batch.step, ())))))
    return out


def _key(made: Plan, inst: Instance) -> str | None:
    """The idempotency key a run gives a resolved instance (None for others)."""
    fp = inst.fingerprint
    if fp is None:
        return None
    return external_id(fp, made.policy.attempt(inst, fp)[0])


def apportion(total: float, estimates: Sequence[float | None]) -> list[float]:
    """A batch's charge split over its members, in proportion to their estimates (equal
    shares when unknown), to the hundredth of a Buzz, the last share taking the rounding:
    the shares always sum to exactly the total, so the lockfile's costs add up to what
    was charged, and no member of a paid batch is recorded as free."""
    n = len(estimates)
    if n == 0:
        return []
    if not math.isfinite(total) or total <= 0:
        return [0.0] * n
    weights = [e if e is not None and math.isfinite(e) and e > 0 else 0.0 for e in estimates]
    if sum(weights) <= 0:
        weights = [1.0] * n
    scale = sum(weights)
    cents = round(total * 100)
    shares = [math.floor(cents * w / scale) for w in weights]
    shares[-1] += cents - sum(shares)
    return [s / 100 for s in shares]
