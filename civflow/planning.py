"""Expanded instances + lockfile + interrupted run -> ordered decisions: what runs, and why.

`plan()` is pure: it takes data and returns data. Everything run-wide that decides
an instance (selection, forcing, seeds, attempts, the cache check) lives in one
`Policy`, computed once here; the executor receives the `Plan` and asks the same
`Policy` about the instances that only become known at run time (fan-outs, inputs
that depend on upstream outputs). So `civflow plan` and `civflow run` cannot
disagree: there is one place that decides.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property
from typing import Any

from civflow import catalog
from civflow.check import Checked
from civflow.check.render import fanout_source, matrix_instances, resolve_pending
from civflow.errors import UsageError
from civflow.expand import (
    Context,
    Instance,
    StepResults,
    derive_seed,
    evaluate_when,
    resolve_step,
)
from civflow.loading.model import PipelineSpec, StepSpec
from civflow.origin import Origin
from civflow.producers import Producers

__all__ = [
    "Decision",
    "InFlight",
    "Plan",
    "PlanOptions",
    "PlannedInstance",
    "Policy",
    "Prior",
    "changed_fields",
    "estimate_instance",
    "glob_match",
    "plan",
]


class Decision(Enum):
    NEW = "new"
    CACHED = "cached"
    CHANGED = "changed"
    FORCED = "forced"
    SKIPPED = "skipped"
    # Paid for before, but its files are nowhere any more (not in out/, the store, the
    # team's remote, nor at Civitai): it is made again, priced and capped like new work.
    LOST = "lost"
    # Its last attempt failed (or was blocked by moderation) and this run would reuse
    # that attempt's key: it is not sent again (`--retry-failed` sends a failed one).
    FAILED = "failed"

    @property
    def runs(self) -> bool:
        return self in (Decision.NEW, Decision.CHANGED, Decision.FORCED, Decision.LOST)


@dataclass(frozen=True)
class Prior:
    """What the lockfile says of one instance, as far as planning needs it."""

    fingerprint: str
    request: Mapping[str, Any]  # {"type", "input", "options"} as fingerprinted
    output: Mapping[str, Any]  # blob URLs replaced by blob tokens
    seed: int | None = None
    artifacts_ok: bool = True  # every artifact intact in the store and in out/
    cost: float | None = None
    reroll: int = 0
    damaged: int = 0  # artifacts to restore from the store or re-download by blob id
    # Of those, the ones only the project's remote has (sha256s): pulled, not re-made.
    remote: tuple[str, ...] = ()
    remote_error: str | None = None  # why the remote could not be asked, if it could not
    # Blob ids of the files neither out/, the store nor the remote has: only Civitai may.
    lost: tuple[str, ...] = ()
    instance: str | None = None  # whose result it is: names an upstream change by it


@dataclass(frozen=True)
class InFlight:
    """An instance an interrupted run submitted (or was about to) and never saw finish."""

    instance: str
    fingerprint: str
    attempt: int
    workflow_id: str | None = None
    seed: int | None = None
    reroll: int = 0


@dataclass(frozen=True)
class PlannedInstance:
    instance: Instance
    decision: Decision
    reasons: tuple[str, ...]
    estimate: float | None  # for a fan-out: each of its instances
    expected: int = 1  # how many instances it stands for (a fan-out of known size)
    sized: bool = True  # False for a fan-out whose size only the run will know

    @property
    def name(self) -> str:
        return self.instance.name


@dataclass(frozen=True)
class PlanOptions:
    force: frozenset[str] = frozenset()  # step names; "*" forces everything
    reroll: frozenset[str] = frozenset()
    only: tuple[str, ...] = ()  # step or instance globs such as 'upscale[*]'
    retry_failed: bool = False


def glob_match(name: str, pattern: str) -> bool:
    """Shell-style `*` and `?`, with brackets literal so 'upscale[*]' reads as written."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, name) is not None


@dataclass(frozen=True)
class Policy:
    """Every run-wide rule that decides an instance; built once by `plan()`."""

    pipeline: str
    forced: frozenset[str]  # steps re-run by --force, with their dependents
    rerolled: frozenset[str]  # steps re-run because of --reroll, with their dependents
    reroll_steps: frozenset[str]  # steps whose unset seeds get a new salt
    wanted: frozenset[str]  # steps this run touches
    filtered: frozenset[str]  # wanted steps whose instances --only filters one by one
    only: tuple[str, ...]
    priors: Mapping[str, Prior] = field(default_factory=dict)
    inflight: Mapping[str, InFlight] = field(default_factory=dict)
    attempts: Mapping[tuple[str, str], int] = field(default_factory=dict)  # highest so far
    # How the last attempt ended when it did not succeed: failed | blocked | vanished.
    failed: Mapping[tuple[str, str], str] = field(default_factory=dict)
    retry_failed: bool = False
    tips: tuple[float, ...] = ()  # the workflow's tip rates, each added to every estimate
    # Earlier paid-for results that are not current (a merge's other side, the version
    # before a change), by fingerprint.
    alternates: Mapping[str, Prior] = field(default_factory=dict)
    # Blob ids Civitai said it no longer has (asked by `run` before it plans; `plan`
    # alone asks nobody).
    gone: frozenset[str] = frozenset()
    # The API this plan is for, and instances the other one made (name -> fingerprint,
    # origin): never cached here, only named in the reason.
    origin: Origin = Origin.CIVITAI
    elsewhere: Mapping[str, tuple[str, Origin]] = field(default_factory=dict)
    # Instances whose interrupted submission this run's recovery finished and recorded:
    # the command that was interrupted (a --force, a --reroll) does not pay for them again.
    resumed: frozenset[str] = frozenset()

    @cached_property
    def producers(self) -> Producers:
        """Which instance made each output the lockfile records (current results, then
        earlier ones), so a change caused upstream is named by its instance."""
        return Producers(((n, p.output) for n, p in self.priors.items()),
                         more=lambda: ((p.instance, p.output) for p in self.alternates.values()
                                       if p.instance is not None))

    def prior_for(self, inst: Instance) -> Prior | None:
        """The lockfile's result for this instance: its entry, or, when that was made for
        other inputs, an alternate with exactly this instance's fingerprint."""
        prior = self.priors.get(inst.name)
        fp = inst.fingerprint
        if fp is not None and (prior is None or prior.fingerprint != fp):
            return self.alternates.get(fp, prior)
        return prior

    def selected(self, instance: str, step: str) -> bool:
        if step not in self.wanted:
            return False
        if step not in self.filtered:
            return True
        return any(glob_match(instance, g) for g in self.only)

    def seed(self, instance: str, step: str) -> tuple[int, int]:
        """(seed, reroll salt) for an instance whose input leaves `seed` unset."""
        prior = self.priors.get(instance)
        flying = self.inflight.get(instance)
        salt = prior.reroll if prior is not None else 0
        if step in self.reroll_steps and instance in self.resumed and prior is not None \
                and prior.seed is not None:
            return prior.seed, salt  # the interrupted --reroll's result, recovered
        if step in self.reroll_steps:
            # The same --reroll command run again after a crash must re-attach to what the
            # interrupted run submitted, not bump the salt and pay a second time.
            if flying is not None and flying.reroll > salt:
                return derive_seed(self.pipeline, instance, flying.reroll), flying.reroll
            return derive_seed(self.pipeline, instance, salt + 1), salt + 1
        if flying is not None and flying.seed is not None and flying.reroll > salt:
            return flying.seed, flying.reroll  # an interrupted --reroll is resumed
        if prior is not None and prior.seed is not None:
            return prior.seed, salt
        return derive_seed(self.pipeline, instance, salt), salt

    def attempt(self, inst: Instance, fingerprint: str, *, fresh: bool = False
                ) -> tuple[int, str | None]:
        """(attempt number, workflow id to re-attach to, if an interrupted run has one).

        `fresh`: the earlier workflow's outputs are gone for good, so a new key is needed.
        """
        flying = self.inflight.get(inst.name)
        if flying is not None and flying.fingerprint == fingerprint and not fresh:
            return flying.attempt, flying.workflow_id
        highest = self.attempts.get((inst.name, fingerprint), 0)
        ended = self.failed.get((inst.name, fingerprint))
        if fresh or inst.step in self.forced or inst.step in self.rerolled or \
                ended == "vanished" or (self.retry_failed and ended == "failed"):
            # A new key, or the API hands back the workflow it already has. A workflow
            # blocked by moderation is never resubmitted automatically.
            return highest + 1, None
        return max(highest, 1), None

    def decide(self, inst: Instance, step: StepSpec,
               running_upstream: Sequence[str] = ()) -> PlannedInstance:
        planned = self._decide(inst, step, running_upstream)
        if planned.decision.runs:
            ended = self._failed_last(inst)
            if ended is not None:
                return PlannedInstance(inst, Decision.FAILED, (ended,), 0.0)
        return planned

    def _failed_last(self, inst: Instance) -> str | None:
        """Why an instance is not sent again: its last attempt failed (or was blocked)
        and this run would reuse that attempt's key. None when it may run."""
        fp = inst.fingerprint
        ended = self.failed.get((inst.name, fp)) if fp is not None else None
        if fp is None or ended not in ("failed", "blocked"):
            return None
        attempt, _ = self.attempt(inst, fp)
        if attempt > self.attempts.get((inst.name, fp), 0):
            return None
        if ended == "blocked":
            return "its last attempt was blocked by moderation; it is not sent again"
        return "its last attempt failed; it is not sent again without --retry-failed"

    def _decide(self, inst: Instance, step: StepSpec,
                running_upstream: Sequence[str]) -> PlannedInstance:
        estimate = estimate_instance(inst, self.tips)
        prior = self.prior_for(inst)
        if inst.name in self.resumed and prior is not None and \
                prior.fingerprint == inst.fingerprint:
            return PlannedInstance(inst, Decision.CACHED, (
                "the interrupted run's workflow finished; recorded by this run",), 0.0)
        if inst.fanout:  # the fan-out stands for every earlier `step[i]`
            prior = next((p for n, p in self.priors.items() if n.startswith(f"{step.name}[")),
                         None)
        if inst.step in self.forced:
            return PlannedInstance(inst, Decision.FORCED, ("--force",), estimate)
        if inst.step in self.rerolled:
            return PlannedInstance(inst, Decision.FORCED, ("--reroll draws a new seed",),
                                   estimate)
        if inst.fanout:
            fanout = (f"one instance per element of {str(step.foreach).strip()}, "
                      "known at run time")
            if prior is not None and running_upstream:
                return PlannedInstance(inst, Decision.CHANGED,
                                       (f"upstream {running_upstream[0]}", fanout), estimate)
            return PlannedInstance(inst, Decision.NEW, (fanout,), estimate)
        if prior is None:
            reasons: tuple[str, ...] = (self._not_locked(inst),)
            if not inst.resolved and running_upstream:
                reasons = (f"upstream {running_upstream[0]}", "not in the lockfile")
            return PlannedInstance(inst, Decision.NEW, reasons, estimate)
        if not inst.resolved:
            ups = tuple(f"upstream {u}" for u in running_upstream) or ("inputs not known yet",)
            return PlannedInstance(inst, Decision.CHANGED, ups, estimate)
        if inst.fingerprint != prior.fingerprint:
            fields = changed_fields(prior.request, inst.request, self.producers) or \
                ["fingerprint"]
            other = self.elsewhere.get(inst.name)
            if other is not None and other[0] == inst.fingerprint:
                fields.append(self._not_locked(inst))  # previewed: still new work here
            return PlannedInstance(inst, Decision.CHANGED, tuple(fields), estimate)
        if not prior.artifacts_ok:
            gone = [b for b in prior.lost if b in self.gone]
            if gone:
                return PlannedInstance(inst, Decision.LOST, (
                    f"paid for before, but its files are gone: not in out/, the store or "
                    f"the remote, and Civitai no longer has blob {gone[0]}",
                    "made again and paid for, within --max-cost"), estimate)
            # Paid for already: the files come back from the store, the team's remote or
            # by blob id, never by submitting (and paying for) the workflow again.
            return PlannedInstance(inst, Decision.CACHED, _damage_reasons(prior, estimate),
                                   0.0)
        return PlannedInstance(inst, Decision.CACHED, ("fingerprint matches the lockfile",), 0.0)


    def _not_locked(self, inst: Instance) -> str:
        """Why an instance this origin never made runs: not in the lockfile, or made
        by the other API only (a preview is not paid work, and vice versa)."""
        other = self.elsewhere.get(inst.name)
        if other is None:
            return "not in the lockfile"
        fingerprint, made = other
        same = " with these inputs" if fingerprint == inst.fingerprint else ""
        if made is Origin.EMULATOR:
            return f"made on the emulator{same}: a preview, not paid work"
        return f"made on Civitai{same}; the emulator makes its own preview"


def _damage_reasons(prior: Prior, estimate: float | None) -> tuple[str, ...]:
    """Why an instance whose files are not all here is still cached, and where they
    come from: the team's remote ("cached (remote)"), the store, or the blob id."""
    reasons = ["fingerprint matches the lockfile"]
    pulled = len(prior.remote)
    local = prior.damaged - pulled - len(prior.lost)
    if pulled:
        reasons.insert(0, "cached (remote)")
        reasons.append(f"{pulled} file(s) only on the remote: run pulls them, nothing is "
                       "re-submitted")
    if local > 0:
        reasons.append(f"{local} file(s) missing from out/: restored from the store, not "
                       "re-submitted")
    if prior.lost:
        price = f", about {estimate:g} Buzz" if estimate is not None else ""
        reasons.append(f"{len(prior.lost)} file(s) only at Civitai: downloaded again by "
                       "blob id; if Civitai no longer has them, `civflow run` plans the "
                       f"instance as lost work{price}, within --max-cost")
    if prior.remote_error:
        reasons.append(f"the remote could not be asked ({prior.remote_error})")
    return tuple(reasons)


@dataclass(frozen=True)
class Plan:
    pipeline: str
    instances: tuple[PlannedInstance, ...]
    policy: Policy
    unchecked: frozenset[str] = frozenset()  # steps sent as written (`unchecked: true`)

    @property
    def estimate(self) -> float:
        return sum((p.estimate or 0.0) * p.expected for p in self.instances if p.decision.runs)

    @property
    def unpriced(self) -> tuple[PlannedInstance, ...]:
        """Instances that run and have no offline price (whatif or the run prices them)."""
        return tuple(p for p in self.instances if p.decision.runs and p.estimate is None)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.instances:
            out[p.decision.value] = out.get(p.decision.value, 0) + 1
        return out


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any],
                   producers: Producers | None = None) -> list[str]:
    """Dotted paths that differ between two requests, e.g. ['input.prompt']; with
    `producers`, a value that is an upstream's output is named by the instance that made
    it instead ('upstream shot[mug-marble] changed'), first."""
    out: list[str] = []
    named: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key, _MISSING), b.get(key, _MISSING), f"{path}.{key}" if path else key)
        elif a != b:
            why = producers.explain(path, _value(a), _value(b)) if producers else None
            if why is None:
                out.append(path or "(everything)")
            elif why not in named:
                named.append(why)
    walk(old, new, "")
    return [*named, *out]


_MISSING = object()


def _value(value: Any) -> Any:
    return None if value is _MISSING else value


def estimate_instance(instance: Instance, tips: Sequence[float] = ()) -> float | None:
    """Buzz for one instance (one workflow) by the catalog's published formulas, as the
    API bills it: the base rounded up to whole Buzz, each tip rounded up on top; None
    if the catalog cannot price it (then `whatif` must; a cap never counts it as free)."""
    try:
        value = float(catalog.estimate_cost(instance.type, resolve_pending(instance.input)))
    except (TypeError, ValueError, LookupError, AttributeError):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    base = math.ceil(value - 1e-9)
    return float(base + sum(math.ceil(base * rate) for rate in tips))


def _fanout_size(spec: PipelineSpec, step: StepSpec, planned: Sequence[PlannedInstance]
                 ) -> int | None:
    """How many instances a fan-out over a whole list of another step will have, when the
    plan fixes it: one per instance of that step (`.outputs`, `.instances`), or one per
    image (`.images`, `.output.images`) when each instance's input fixes how many images
    it makes. None when only the run can tell (a size at run time, a `when` per instance,
    a filtered list)."""
    found = fanout_source(step)
    source = spec.steps.get(found[0]) if found is not None else None
    if found is None or source is None:
        return None
    of_source = [p for p in planned if p.instance.step == source.name]
    if not of_source or any(not p.sized or p.instance.when_pending or
                            p.decision is Decision.SKIPPED for p in of_source):
        return None
    if found[1] in ("outputs", "instances"):
        return sum(p.expected for p in of_source)
    total = 0
    for p in of_source:
        each = catalog.image_count(source.type, p.instance.input)
        if each is None:
            return None
        total += p.expected * each
    return total


def _tip_rates(workflow: Mapping[str, Any]) -> tuple[float, ...]:
    tips = workflow.get("tips")
    if not isinstance(tips, Mapping):
        return ()
    rates = [v for v in tips.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return tuple(float(r) for r in rates if math.isfinite(r) and r > 0)


def _selection(checked: Checked, only: Sequence[str]) -> tuple[frozenset[str], frozenset[str]]:
    """(wanted steps, steps filtered instance by instance) for --only globs.

    A glob names a step ('upscale', 'up*') or instances ('shot[*seed=1]'); a step whose
    instances are known only at run time is matched by the part before '['. The steps a
    selection needs run whole. A glob that matches nothing is a usage error: a typo in CI
    must fail, not report "nothing to do".
    """
    spec, graph = checked.spec, checked.graph
    whole: set[str] = set()
    partial: set[str] = set()
    for pattern in only:
        hit = False
        for name, step in spec.steps.items():
            if glob_match(name, pattern):
                whole.add(name)
                hit = True
            elif step.foreach is not None and glob_match(name, pattern.split("[", 1)[0]):
                partial.add(name)
                hit = True
            elif step.matrix and any(glob_match(inst, pattern)
                                     for inst, _ in matrix_instances(step, checked.engine, spec)):
                partial.add(name)
                hit = True
        if not hit:
            close = difflib.get_close_matches(pattern.split("[", 1)[0], list(spec.steps), n=1)
            raise UsageError(
                f"--only {pattern!r} matches no step or instance of {spec.name}",
                hint=f"did you mean '{close[0]}'?" if close else
                f"the steps are: {', '.join(spec.steps)}")
    chosen = whole | partial
    # A step that another selected step needs runs whole, even if a glob also filtered it.
    needed = {a for t in chosen for a in graph.upstream_closure({t}) - {t}}
    return frozenset(graph.upstream_closure(chosen)), frozenset(partial - whole - needed)


def make_policy(checked: Checked, options: PlanOptions, priors: Mapping[str, Prior],
                inflight: Mapping[str, InFlight],
                attempts: Mapping[tuple[str, str], int],
                failed: Mapping[tuple[str, str], str],
                alternates: Mapping[str, Prior] | None = None,
                gone: frozenset[str] = frozenset(), origin: Origin = Origin.CIVITAI,
                elsewhere: Mapping[str, tuple[str, Origin]] | None = None) -> Policy:
    spec, graph = checked.spec, checked.graph
    every = set(spec.steps)
    unknown = sorted(s for s in (options.force | options.reroll) - every if s != "*")
    if unknown:
        raise UsageError(f"no step named {unknown[0]!r} in {spec.name}",
                         hint=f"the steps are: {', '.join(spec.steps)}")
    if options.only:
        wanted, filtered = _selection(checked, options.only)
    else:
        wanted, filtered = frozenset(every), frozenset()
    forced = graph.downstream_closure(
        every if "*" in options.force else set(options.force) & every)
    return Policy(
        pipeline=spec.name, forced=frozenset(forced),
        rerolled=frozenset(graph.downstream_closure(set(options.reroll) & every)),
        reroll_steps=frozenset(options.reroll & every), wanted=wanted, filtered=filtered,
        only=options.only, priors=priors, inflight=inflight, attempts=attempts,
        failed=failed, retry_failed=options.retry_failed, tips=_tip_rates(spec.workflow),
        alternates=alternates if alternates is not None else {}, gone=gone, origin=origin,
        elsewhere=elsewhere or {})


def plan(checked: Checked, priors: Mapping[str, Prior] | None = None,
         options: PlanOptions | None = None, *, run_id: str | None = None,
         inflight: Mapping[str, InFlight] | None = None,
         attempts: Mapping[tuple[str, str], int] | None = None,
         failed: Mapping[tuple[str, str], str] | None = None,
         alternates: Mapping[str, Prior] | None = None,
         gone: frozenset[str] = frozenset(), origin: Origin = Origin.CIVITAI,
         elsewhere: Mapping[str, tuple[str, Origin]] | None = None) -> Plan:
    """Decide, for every selected instance in dependency order, whether it runs and why."""
    spec, graph = checked.spec, checked.graph
    policy = make_policy(checked, options or PlanOptions(), priors or {}, inflight or {},
                         attempts or {}, failed or {}, alternates, gone, origin, elsewhere)
    running: set[str] = set()  # steps with at least one instance that runs
    skipped: set[str] = set()
    failing: set[str] = set()  # steps with an instance that failed last time (not re-sent)
    out: list[PlannedInstance] = []
    context = Context(spec, run_id, checked.engine)
    for name in graph.order:
        if name not in policy.wanted:
            continue
        step = spec.steps[name]
        upstream = graph.upstream(name)
        dead = [u for u in upstream if u in skipped]
        verdict = None if dead else evaluate_when(checked, step, context)
        instances = [i for i in resolve_step(checked, step, context, policy.seed)
                     if i.fanout or policy.selected(i.name, name)]
        if dead or verdict is False:
            why = f"when: {step.when} is false"
            if dead:  # as the run skips what waits on a step that does not succeed
                why = f"upstream {dead[0]} failed last time and is not sent again" \
                    if dead[0] in failing else f"upstream {dead[0]} is skipped"
            skipped.add(name)
            context.learn(name, StepResults((), skipped=True))
            out += [PlannedInstance(i, Decision.SKIPPED, (why,), None) for i in instances]
            continue
        outputs: list[Mapping[str, Any]] = []
        cached: list[Instance] = []
        for inst in instances:
            planned = policy.decide(inst, step, [u for u in upstream if u in running])
            if inst.fanout:
                size = _fanout_size(spec, step, out)
                planned = replace(planned, expected=size or 1, sized=size is not None)
            if verdict is None or inst.when_pending:
                planned = replace(planned, reasons=(*planned.reasons,
                                                    "when is evaluated at run time"))
            out.append(planned)
            if planned.decision.runs:
                running.add(name)
            if planned.decision is Decision.FAILED:
                failing.add(name)
                skipped.add(name)
            prior = policy.prior_for(inst)
            if planned.decision is Decision.CACHED and prior is not None:
                outputs.append(prior.output)
                cached.append(inst)
        if name not in running and outputs and len(outputs) == len(instances):
            context.learn(name, StepResults.of(cached, outputs))
    unchecked = frozenset(n for n, s in spec.steps.items() if s.unchecked)
    return Plan(spec.name, tuple(out), policy, unchecked)
