"""The review model: what a change does to every pipeline and instance, and what it costs.

`compare(paths, base_ref, cwd=...)` plans the working tree (the head) and the same
pipelines as of a git ref (the base), and returns a `Review`. The PR comment
(`civflow plan --base`), the JSON for other tools and the HTML report all read this
one model; none of them plans anything itself.

    Review
    ├── base_ref, base_commit          None, None when there is no base (`base_ref=None`)
    ├── pipelines: [PipelineReview]    in path order; removed pipelines last
    │   ├── name, head_path, base_path repository paths (posix); None on the missing side
    │   ├── status                     added | removed | renamed | modified | unchanged
    │   ├── instances: [InstanceChange]  head plan order; removed ones after their step's
    │   │   ├── name, step, type, status    added | removed | changed | unchanged
    │   │   ├── fields: [FieldChange(path, old, new, kind)]
    │   │   ├── reasons                     why beyond its fields (an upstream instance, named)
    │   │   ├── base_entry, head_entry      the LockedInstance of each side's lockfile, or None
    │   │   ├── planned                     the head's PlannedInstance (decision, estimate), or None
    │   │   └── base_planned                the base's PlannedInstance, or None
    │   ├── base_spent                  Buzz the base paid for what is removed or replaced
    │   ├── estimate, unpriced          Buzz the head plan estimates for what will run, and
    │   │                               how many instances only the run can price
    │   ├── delta                       what merging will spend on the base branch: the
    │   │                               estimate (+ unpriced), never netted against base_spent
    │   ├── paid_on_branch              Buzz the head's lockfile records for work it made
    │   └── producers                   which instance made each output (civflow.producers)
    └── base_spent, estimate, delta, counts()   the same over every pipeline

Field paths read as a person writes the input: `prompt`, `seed`, `loras[…@789012]` (a
key that is an AIR is shown by its version id), `images[0]`, `options.priority`. Values
are the rendered request bodies: the base plan's request (or, when the base plan could
not resolve an instance, the request its lockfile recorded) against the head plan's.
A value still pending on the head (an upstream output that a run will produce) is not a
field change; the instance is "changed" because its upstream is. Nor is a value that is
an upstream instance's output (a content token both lockfiles know the maker of): it is a
reason naming that instance, `upstream shot[mug-marble] changed`, not two hashes.

Money is honest: `delta` is what merging costs on the base branch (the head plan runs
there against the head's lockfile, so it is the head's estimate), with run-time-priced
instances counted apart (`unpriced`, "+ N priced at run time"), never as 0. Spend being
replaced (`base_spent`) is shown beside it and never subtracted: re-making a paid result
does not refund it. Results made on the emulator are previews, planned as work and
priced (civflow.origin).

With `base_ref=None` there is nothing to compare with: every instance is "unchanged"
against itself and `base_spent` is 0, so the report can show a plain review of the head.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from civflow.check import Checked
from civflow.errors import CivflowError, PipelineNotFound, UsageError
from civflow.loading.discover import is_pipeline_text, pipeline_files
from civflow.loading.model import PipelineSpec
from civflow.names import lockfile_path_for
from civflow.planning import Plan, PlannedInstance, PlanOptions
from civflow.producers import Producers
from civflow.review.gitbase import BaseTree, open_base
from civflow.store.lockfile import LockedInstance, Lockfile
from civflow.template import Pending

__all__ = [
    "FieldChange",
    "InstanceChange",
    "InstanceStatus",
    "PipelineReview",
    "PipelineStatus",
    "Review",
    "compare",
    "field_changes",
    "is_pipeline_text",
    "reading_order",
]

InstanceStatus = Literal["added", "removed", "changed", "unchanged"]
PipelineStatus = Literal["added", "removed", "renamed", "modified", "unchanged"]
INSTANCE_STATUSES: tuple[InstanceStatus, ...] = ("added", "removed", "changed", "unchanged")
# The order a reviewer reads pipelines in: what changed, what is new, what is gone, then
# the rest.
_READING: dict[str, int] = {"modified": 0, "renamed": 0, "added": 1, "removed": 2,
                            "unchanged": 3}

# A request nests a few levels; deeper than this is shown as one changed value.
_MAX_DEPTH = 32
# Field changes kept per instance (a comfy graph can differ in thousands of leaves).
MAX_FIELDS = 200


@dataclass(frozen=True)
class FieldChange:
    """One leaf of the request that differs: `kind` is changed, added (no `old`) or
    removed (no `new`); the missing side is None."""

    path: str
    old: Any
    new: Any
    kind: Literal["changed", "added", "removed"] = "changed"


@dataclass(frozen=True)
class InstanceChange:
    """One instance on either side of the change."""

    name: str
    step: str
    type: str
    status: InstanceStatus
    fields: tuple[FieldChange, ...] = ()
    reasons: tuple[str, ...] = ()  # why it is changed when no field says it ('upstream …')
    base_entry: LockedInstance | None = None
    head_entry: LockedInstance | None = None
    planned: PlannedInstance | None = None  # the head plan's decision; None when removed
    base_planned: PlannedInstance | None = None
    matrix: Mapping[str, Any] = field(default_factory=dict)
    more_fields: int = 0  # field changes past MAX_FIELDS, counted and not kept

    @property
    def decision(self) -> str | None:
        """The head plan's decision ('new', 'cached', 'changed', …), None when removed."""
        return self.planned.decision.value if self.planned is not None else None

    @property
    def runs(self) -> bool:
        return self.planned is not None and self.planned.decision.runs

    @property
    def estimate(self) -> float | None:
        """Buzz the head plan expects this instance to cost (0 when cached, None when it
        is priced at run time or removed); a fan-out counts every expected instance."""
        if self.planned is None:
            return None
        if not self.planned.decision.runs:
            return 0.0
        if self.planned.estimate is None:
            return None
        if self.planned.instance.fanout and self.planned.name != self.name:
            return self.planned.estimate  # one of the instances the fan-out stands for
        return self.planned.estimate * self.planned.expected

    @property
    def base_cost(self) -> float | None:
        """What the base's lockfile says this instance cost."""
        return self.base_entry.cost if self.base_entry is not None else None


@dataclass(frozen=True)
class PipelineReview:
    """One pipeline file on both sides of the change."""

    name: str
    head_path: str | None  # repository path (posix) in the working tree
    base_path: str | None  # repository path (posix) at the base ref
    status: PipelineStatus
    instances: tuple[InstanceChange, ...]
    head_plan: Plan | None = None
    base_plan: Plan | None = None
    head_spec: PipelineSpec | None = None
    project_root: Path | None = None  # where .civflow/ (the object store) and out/ live
    head_lock_dir: Path | None = None  # head artifacts' paths are relative to this
    base_lock_dir: Path | None = None  # base artifacts' paths: relative to this (head tree)
    notes: tuple[str, ...] = ()
    # This machine's emulator previews by instance (never paid work, never counted).
    previews: Mapping[str, LockedInstance] = field(default_factory=dict)
    # Which instance made each output either lockfile records: names upstream changes.
    producers: Producers = field(default_factory=Producers)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(INSTANCE_STATUSES, 0)
        for inst in self.instances:
            out[inst.status] += 1
        return out

    @property
    def base_spent(self) -> float:
        """Buzz the base's lockfile records for the instances removed or replaced."""
        return sum(i.base_cost or 0.0 for i in self.instances
                   if i.status in ("removed", "changed"))

    @property
    def estimate(self) -> float:
        """Buzz the head plan estimates for everything that will run."""
        return self.head_plan.estimate if self.head_plan is not None else 0.0

    @property
    def unpriced(self) -> int:
        """Instances that will run and are priced only at run time."""
        return len(self.head_plan.unpriced) if self.head_plan is not None else 0

    @property
    def delta(self) -> float:
        """What merging will spend on the base branch (see the module docstring)."""
        return self.estimate

    @property
    def paid_on_branch(self) -> float:
        """Buzz the head's lockfile records for current results the base does not have
        (work applied on the branch): merging does not pay for it again."""
        return sum(i.head_entry.cost or 0.0 for i in self.instances
                   if i.head_entry is not None and i.planned is not None
                   and not i.planned.decision.runs and i.head_entry.made_by != "emulator"
                   and (i.base_entry is None
                        or i.base_entry.fingerprint != i.head_entry.fingerprint))

    def by_step(self) -> dict[str, list[InstanceChange]]:
        out: dict[str, list[InstanceChange]] = {}
        for inst in self.instances:
            out.setdefault(inst.step, []).append(inst)
        return out


@dataclass(frozen=True)
class Review:
    """Every pipeline named, compared with `base_ref` (see the module docstring)."""

    base_ref: str | None
    base_commit: str | None
    pipelines: tuple[PipelineReview, ...]
    paths: tuple[str, ...] = ()  # as given on the command line
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(INSTANCE_STATUSES, 0)
        for p in self.pipelines:
            for k, n in p.counts().items():
                out[k] += n
        return out

    @property
    def base_spent(self) -> float:
        return sum(p.base_spent for p in self.pipelines)

    @property
    def estimate(self) -> float:
        return sum(p.estimate for p in self.pipelines)

    @property
    def unpriced(self) -> int:
        return sum(p.unpriced for p in self.pipelines)

    @property
    def delta(self) -> float:
        """What merging will spend on the base branch, + `unpriced` at run time."""
        return self.estimate

    @property
    def paid_on_branch(self) -> float:
        return sum(p.paid_on_branch for p in self.pipelines)


class _HasStatus(Protocol):
    @property
    def status(self) -> str: ...


_P = TypeVar("_P", bound=_HasStatus)


def reading_order(pipelines: Sequence[_P]) -> list[_P]:
    """Pipelines as a reviewer reads them: changed (modified, renamed) first, then added,
    removed, unchanged; the given order kept within each."""
    return sorted(pipelines, key=lambda p: _READING.get(p.status, len(_READING)))


# -- field changes ---------------------------------------------------------------------

_AIR_VERSION = re.compile(r"^urn:air:.*@([^@/\s]+)$")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PENDING_TEXT = re.compile(r"^<pending [^>]*>$")
_MISSING = object()


def _key_text(key: str) -> str:
    match = _AIR_VERSION.match(key)
    if match:
        return f"[…@{match.group(1)}]"
    return f".{key}" if _PLAIN_KEY.match(key) else f"[{key!r}]"


def _is_pending(value: Any) -> bool:
    return isinstance(value, Pending) or (isinstance(value, str)
                                          and _PENDING_TEXT.match(value) is not None)


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any], *,
                  limit: int = MAX_FIELDS, producers: Producers | None = None
                  ) -> tuple[list[FieldChange], int, tuple[str, ...]]:
    """The leaves that differ between two requests ({"type", "input", "options"}), how
    many more there were past `limit`, and the upstream changes among them. `input.` is
    left out of paths; a value pending on either side (known only when an upstream runs)
    is not a change. With `producers`, a leaf that is an upstream instance's output is
    not a field change but a reason naming that instance ('upstream shot[mug-marble]
    changed'): two content hashes tell a reviewer nothing."""
    out: list[FieldChange] = []
    named: list[str] = []
    more = 0

    def add(change: FieldChange) -> None:
        nonlocal more
        why = producers.explain(change.path, change.old, change.new) \
            if producers is not None else None
        if why is not None:
            if why not in named:
                named.append(why)
        elif len(out) < limit:
            out.append(change)
        else:
            more += 1

    def walk(a: Any, b: Any, path: str, depth: int) -> None:
        if _is_pending(a) or _is_pending(b):
            return
        if a is _MISSING:
            add(FieldChange(path, None, _plain(b), "added"))
        elif b is _MISSING:
            add(FieldChange(path, _plain(a), None, "removed"))
        elif depth < _MAX_DEPTH and isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, _MISSING), b.get(key, _MISSING),
                     f"{path}{_key_text(str(key))}" if path else str(key), depth + 1)
        elif depth < _MAX_DEPTH and isinstance(a, list | tuple) and \
                isinstance(b, list | tuple) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{path}[{i}]", depth + 1)
        elif _plain(a) != _plain(b):
            add(FieldChange(path, _plain(a), _plain(b)))

    for top in ("type", "input", "options"):
        a, b = old.get(top, _MISSING), new.get(top, _MISSING)
        if top == "input" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, _MISSING), b.get(key, _MISSING), str(key), 1)
        elif top == "options" and isinstance(a, Mapping) and isinstance(b, Mapping):
            for key in sorted(set(a) | set(b), key=str):
                walk(a.get(key, _MISSING), b.get(key, _MISSING), f"options.{key}", 1)
        elif not (a is _MISSING and b is _MISSING):
            walk(a, b, top, 1)
    return out, more, tuple(named)


def _plain(value: Any) -> Any:
    """JSON data: mappings as dicts, tuples as lists, pending values as their text."""
    if isinstance(value, Pending):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# -- pipelines on both sides -----------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        c = pattern[i]
        out.append("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out))


def _head_files(paths: Sequence[Path], cwd: Path) -> list[Path]:
    """Pipeline files named by files, folders and globs, relative to `cwd`: the command
    line's own rules (civflow.loading.discover)."""
    return pipeline_files(paths, cwd)


def _base_files(tree: BaseTree, paths: Sequence[Path], cwd: Path) -> list[str]:
    """Repository paths of the base's pipeline files the same `paths` name."""
    here = tree.relative(Path("."), cwd=cwd)
    candidates: list[str] = []
    for given in paths or (Path("."),):
        if any(c in str(given) for c in "*?[") and not (cwd / given).exists():
            if given.is_absolute():
                continue
            pattern = posixpath.normpath(posixpath.join(here, given.as_posix())) \
                if here else posixpath.normpath(given.as_posix())
            regex = _glob_regex(pattern)
            candidates += [p for p in tree.files() if regex.fullmatch(p)]
            continue
        rel = tree.relative(given, cwd=cwd)
        if tree.has(rel):
            candidates.append(rel)
            continue
        below = [p for p in tree.under(rel) if p.endswith((".yaml", ".yml"))]
        inside = [p for p in below
                  if not any(part.startswith(".") for part in
                             Path(p[len(rel):].lstrip("/")).parts)]
        texts = tree.read_many(inside)
        candidates += [p for p in inside
                       if is_pipeline_text(texts.get(p, b"")[:4096].decode("utf-8", "replace"))]
    return list(dict.fromkeys(candidates))


# Names in a pipeline or template that may be files it reads (includes, comfy workflows).
_FILE_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,255}")
_MAX_SCANNED = 500  # files scanned for more names, per pipeline


def _related(tree: BaseTree, pipeline: str, project: str) -> list[str]:
    """Files of the base that `pipeline` may read: every word of it (and of what those
    name, transitively) that is a file of the base tree relative to the pipeline's folder
    or the project's root. Over-approximate on purpose: a copy too many costs a few bytes,
    a missing include would fail the base plan."""
    folder = posixpath.dirname(pipeline)
    seen: list[str] = []
    todo = [pipeline]
    while todo and len(seen) < _MAX_SCANNED:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        data = tree.read(path) or b""
        if len(data) > 2**20 and path != pipeline:
            continue
        text = data.decode("utf-8", "replace")
        for word in set(_FILE_WORD.findall(text)):
            if "." not in word:
                continue
            for base in (folder, project):
                name = posixpath.normpath(posixpath.join(base, word)) if base else \
                    posixpath.normpath(word)
                if name not in seen and tree.has(name) and \
                        tree.files()[name].size <= 8 * 2**20:
                    todo.append(name)
    return seen


# -- planning --------------------------------------------------------------------------


@dataclass
class _Side:
    """One side of one pipeline: planned, with its lockfile, or why it could not be."""

    spec: PipelineSpec | None = None
    checked: Checked | None = None
    plan: Plan | None = None
    lock: Lockfile | None = None
    error: str | None = None
    previews: Mapping[str, LockedInstance] = field(default_factory=dict)


def _previews(checked: Checked) -> Mapping[str, LockedInstance]:
    """The emulator's entries of this pipeline on this machine (`run --emulator`): shown
    as previews where the head has no paid result, never counted as one."""
    from civflow.origin import Origin
    from civflow.runner import lockfile_target
    from civflow.runner.state import project_root

    spec = checked.spec
    try:
        lock = Lockfile.load(lockfile_target(spec, project_root(spec), origin=Origin.EMULATOR))
    except CivflowError:
        return {}
    return {name: entry for name, entry in (lock.instances.items() if lock else ())
            if entry.made_by == "emulator"}


def _plan_head(path: Path, pairs: Sequence[str], vars_files: Sequence[Path],
               options: PlanOptions, strict: bool) -> _Side:
    from civflow.check import check_pipeline
    from civflow.loading import load_pipeline, parse_var_overrides
    from civflow.runner import prepare

    spec = load_pipeline(path, parse_var_overrides(pairs, vars_files))
    checked = check_pipeline(spec, strict=strict)
    prepared = prepare(checked, options)
    return _Side(spec, checked, prepared.plan, prepared.lock, previews=_previews(checked))


def _plan_base(path: Path, pairs: Sequence[str], vars_files: Sequence[Path],
               options: PlanOptions, strict: bool) -> _Side:
    """The base pipeline planned against its own lockfile (nothing on this machine is
    consulted: no journal, no store)."""
    from civflow.check import check_pipeline
    from civflow.loading import load_pipeline, parse_var_overrides, read_source
    from civflow.planning import plan
    from civflow.runner.state import load_priors

    overrides = parse_var_overrides(pairs, vars_files)
    declared = read_source(path).data.get("vars") or {}
    known = {k: v for k, v in overrides.items() if isinstance(declared, Mapping)
             and k in declared}
    spec = load_pipeline(path, known)
    checked = check_pipeline(spec, strict=strict)
    made = plan(checked, load_priors(spec, check_artifacts=False),
                PlanOptions(only=options.only))
    return _Side(spec, checked, made, Lockfile.load(spec.lockfile_path))


def _instance_status(base: PlannedInstance, head: PlannedInstance,
                     base_entry: LockedInstance | None, upstream_changed: Sequence[str],
                     producers: Producers
                     ) -> tuple[InstanceStatus, list[FieldChange], int, tuple[str, ...]]:
    b, h = base.instance, head.instance
    old: Mapping[str, Any] = b.request
    if not b.resolved and base_entry is not None and not b.fanout:
        old = base_entry.request
    fields, more, reasons = field_changes(old, h.request, producers=producers)
    if b.resolved and h.resolved:
        status: InstanceStatus = "changed" if b.fingerprint != h.fingerprint else "unchanged"
    else:
        status = "changed" if fields or reasons or upstream_changed else "unchanged"
    if status == "changed" and not fields and not reasons:
        reasons = tuple(f"upstream {u} changes" for u in upstream_changed) or \
            ("the request differs",)
    return status, fields, more, reasons


def _producers(*locks: Lockfile | None) -> Producers:
    """Which instance made each output either lockfile records, current results first,
    then earlier ones: the head's before the base's."""
    made = Producers()
    for current in (True, False):
        for lock in locks:
            if lock is None:
                continue
            for entry in (lock.instances if current else lock.alternates).values():
                made.add_refs(entry.instance, entry.refs)
    return made


def _compare_plans(head: _Side, base: _Side, producers: Producers) -> list[InstanceChange]:
    assert head.plan is not None and head.checked is not None
    head_lock = head.lock.instances if head.lock else {}
    base_lock = base.lock.instances if base.lock else {}
    base_by = {p.name: p for p in base.plan.instances} if base.plan else {}
    head_names = {p.name for p in head.plan.instances}
    # A step whose instances the head knows only at run time (a fan-out placeholder)
    # replaces whatever instances the base had for that step.
    head_fanouts = {p.instance.step: p for p in head.plan.instances if p.instance.fanout}
    graph = head.checked.graph
    changed_steps: set[str] = set()
    out: dict[str, list[InstanceChange]] = {}
    for planned in head.plan.instances:
        inst = planned.instance
        step = inst.step
        ups = [u for u in graph.upstream(step) if u in changed_steps]
        entry = head_lock.get(inst.name)
        prior = base_by.get(inst.name)
        if inst.fanout and prior is None and any(
                p.instance.step == step for p in base_by.values()):
            continue  # listed through the base's instances of the step, below
        if prior is None:
            change = InstanceChange(inst.name, step, inst.type, "added", (),
                                    ("not in the base",), None, entry, planned, None,
                                    dict(inst.matrix))
        else:
            status, fields, more, reasons = _instance_status(
                prior, planned, base_lock.get(inst.name), ups, producers)
            change = InstanceChange(inst.name, step, inst.type, status, tuple(fields),
                                    reasons, base_lock.get(inst.name), entry, planned, prior,
                                    dict(inst.matrix), more)
        if change.status != "unchanged":
            changed_steps.add(step)
        out.setdefault(step, []).append(change)
    for prior in base.plan.instances if base.plan else ():
        inst = prior.instance
        if inst.name in head_names:
            continue
        fanout = head_fanouts.get(inst.step)
        if fanout is not None:
            change = InstanceChange(
                inst.name, inst.step, inst.type, "changed", (),
                (f"{inst.step} is re-expanded at run time ({'; '.join(fanout.reasons)})",),
                base_lock.get(inst.name), head_lock.get(inst.name), fanout, prior,
                dict(inst.matrix))
        else:
            change = InstanceChange(inst.name, inst.step, inst.type, "removed", (),
                                    ("not in the head",), base_lock.get(inst.name), None,
                                    None, prior, dict(inst.matrix))
        changed_steps.add(inst.step)
        out.setdefault(inst.step, []).append(change)
    return [c for changes in out.values() for c in changes]


def _unchanged(head: _Side) -> list[InstanceChange]:
    assert head.plan is not None
    lock = head.lock.instances if head.lock else {}
    return [InstanceChange(p.name, p.instance.step, p.instance.type, "unchanged", (), (),
                           lock.get(p.name), lock.get(p.name), p, p, dict(p.instance.matrix))
            for p in head.plan.instances]


def _removed(base: _Side) -> list[InstanceChange]:
    assert base.plan is not None
    lock = base.lock.instances if base.lock else {}
    return [InstanceChange(p.name, p.instance.step, p.instance.type, "removed", (),
                           ("the pipeline file is gone",), lock.get(p.name), None, None, p,
                           dict(p.instance.matrix))
            for p in base.plan.instances]


def _added(head: _Side) -> list[InstanceChange]:
    assert head.plan is not None
    lock = head.lock.instances if head.lock else {}
    return [InstanceChange(p.name, p.instance.step, p.instance.type, "added", (),
                           ("not in the base",), None, lock.get(p.name), p, None,
                           dict(p.instance.matrix))
            for p in head.plan.instances]


def _shown(path: Path, here: Path) -> str:
    """`path` relative to `here` (posix) when it is below it."""
    try:
        return path.resolve().relative_to(here).as_posix()
    except ValueError:
        return path.as_posix()


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="civflow-base-") as folder:
        yield Path(folder).resolve()


def compare(paths: Sequence[Path | str], base_ref: str | None, *, cwd: Path | None = None,
            head_files: Sequence[Path] | None = None, var_pairs: Sequence[str] = (),
            vars_files: Sequence[Path] = (), options: PlanOptions | None = None,
            strict: bool = False) -> Review:
    """Plan `paths` (files, folders, globs) in the working tree and, with `base_ref`, as
    of that git ref; see the module docstring for what the `Review` holds.

    `head_files`: the pipeline files `paths` name, when the caller already expanded
    them; with `head_files` and no `paths`, only those files are compared (no removed
    pipelines are looked for). `var_pairs` (`K=V`) and `vars_files` apply to both
    sides; a vars file is read as of the base ref on the base side. An invalid head
    pipeline raises its located PipelineInvalid; a base that cannot be planned is
    compared as absent, with a note.
    """
    here = (cwd or Path.cwd()).resolve()
    given = tuple(Path(p) for p in paths) or ((Path("."),) if head_files is None else ())
    files = list(head_files) if head_files is not None else _head_files(given, here)
    # Relative paths stay as given when they are relative to the process's folder, so
    # errors name the file as the user wrote it.
    same = here == Path.cwd().resolve()
    files = [f if f.is_absolute() or same else here / f for f in files]
    opts = options or PlanOptions()
    if base_ref is None:
        reviews = []
        for file in files:
            head = _plan_head(file, var_pairs, vars_files, opts, strict)
            shown = _shown(file, here)
            reviews.append(_pipeline_review(head, head, shown, shown, "unchanged",
                                            _unchanged(head)))
        return Review(None, None, tuple(reviews), tuple(str(p) for p in given))
    tree = open_base(base_ref, here)
    for file in files:
        tree.relative(file, cwd=here)  # refuses a file outside the repository
    with _scratch() as scratch:
        return _compare_with(tree, scratch, given, files, here, var_pairs, vars_files, opts,
                             strict)


def _compare_with(tree: BaseTree, scratch: Path, given: tuple[Path, ...], files: list[Path],
                  here: Path, var_pairs: Sequence[str], vars_files: Sequence[Path],
                  opts: PlanOptions, strict: bool) -> Review:
    notes: list[str] = []
    for g in given:
        if any(c in str(g) for c in "*?[") or (g if g.is_absolute() else here / g).exists():
            continue
        rel = tree.relative(g, cwd=here)
        if not tree.has(rel) and not tree.under(rel):
            raise PipelineNotFound(path=str(g))
    renames = tree.renames()
    base_vars: list[Path] = []
    for vf in vars_files:
        rel = tree.relative(vf, cwd=here)
        if tree.has(rel):
            tree.copy([rel], scratch)
            base_vars.append(scratch / rel)
        else:
            notes.append(f"{vf} is not in {tree.ref}: the base side uses this tree's copy")
            base_vars.append(vf if vf.is_absolute() else here / vf)
    # Removed pipelines are looked for under the paths given; a caller that names only
    # head files (no paths) asks about those files alone.
    base_candidates = _base_files(tree, given, here) if given else []
    reviews: list[PipelineReview] = []
    matched: set[str] = set()
    for file in files:
        rel = tree.relative(file, cwd=here)
        head = _plan_head(file, var_pairs, vars_files, opts, strict)
        assert head.spec is not None
        base_rel = renames.get(rel, rel)
        if not tree.has(base_rel):
            reviews.append(_pipeline_review(head, _Side(), rel, None, "added", _added(head),
                                            tree=tree))
            continue
        matched.add(base_rel)
        base = _base_side(tree, scratch, base_rel, head.spec, var_pairs, base_vars, opts,
                          strict)
        if base.plan is None:
            reviews.append(_pipeline_review(head, base, rel, base_rel, "added", _added(head),
                                            tree=tree))
            continue
        producers = _producers(head.lock, base.lock)
        changes = _compare_plans(head, base, producers)
        status: PipelineStatus = "renamed" if base_rel != rel else (
            "modified" if any(c.status != "unchanged" for c in changes) else "unchanged")
        reviews.append(_pipeline_review(head, base, rel, base_rel, status, changes, tree=tree,
                                        producers=producers))
    head_rels = {tree.relative(f, cwd=here) for f in files}
    for base_rel in base_candidates:
        if base_rel in matched or base_rel in head_rels:
            continue
        if base_rel in renames.values():
            continue  # renamed to a path outside the ones named: not this review's
        base = _base_side(tree, scratch, base_rel, None, var_pairs, base_vars, opts, strict)
        if base.plan is None or base.spec is None:
            notes.append(f"{base_rel} (removed) could not be planned as of {tree.ref}: "
                         f"{base.error}")
            continue
        reviews.append(PipelineReview(
            base.spec.name, None, base_rel, "removed", tuple(_removed(base)),
            base_plan=base.plan, project_root=tree.root,
            base_lock_dir=tree.root / posixpath.dirname(base_rel),
            producers=_producers(base.lock)))
    return Review(tree.ref, tree.commit, tuple(reviews), tuple(str(p) for p in given),
                  tuple(notes))


def _base_side(tree: BaseTree, scratch: Path, base_rel: str, head_spec: PipelineSpec | None,
               var_pairs: Sequence[str], vars_files: Sequence[Path], opts: PlanOptions,
               strict: bool) -> _Side:
    """Copy the base's pipeline, lockfile and the files it reads into `scratch`, and plan."""
    project = ""
    if head_spec is not None:
        with contextlib.suppress(UsageError):
            project = tree.relative(head_spec.project_root, cwd=tree.root)
    marker = scratch / project / ".civflow" if project else scratch / ".civflow"
    marker.mkdir(parents=True, exist_ok=True)
    lock_rel = posixpath.join(posixpath.dirname(base_rel),
                              lockfile_path_for(Path(posixpath.basename(base_rel))).name)
    try:
        tree.copy([*_related(tree, base_rel, project), lock_rel], scratch)
        return _plan_base(scratch / base_rel, var_pairs, vars_files, opts, strict)
    except CivflowError as exc:
        text = exc.render().replace(f"{scratch}/", f"{tree.ref}:")
        return _Side(error=text)


def _pipeline_review(head: _Side, base: _Side, head_path: str, base_path: str | None,
                     status: PipelineStatus, changes: Sequence[InstanceChange], *,
                     tree: BaseTree | None = None, producers: Producers | None = None
                     ) -> PipelineReview:
    assert head.spec is not None
    notes = []
    if base.error is not None and tree is not None:
        notes.append(f"the base version ({tree.ref}:{base_path}) could not be planned, so "
                     f"every instance counts as added: {base.error}")
    head_dir = head.spec.lockfile_path.parent
    base_dir = None
    if tree is None:
        base_dir = head_dir  # no base: the head is compared with itself
    elif base_path is not None:
        base_dir = tree.root / posixpath.dirname(base_path)
    return PipelineReview(
        head.spec.name, head_path, base_path, status, tuple(changes), head.plan, base.plan,
        head.spec, head.spec.project_root, head_dir, base_dir, tuple(notes),
        previews=head.previews,
        producers=producers if producers is not None else _producers(head.lock, base.lock))
