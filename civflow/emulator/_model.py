"""The emulator's runtime records of workflows and steps, and helpers over step inputs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from civflow.emulator import _steps

TERMINAL = frozenset({"succeeded", "failed", "expired", "canceled"})
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$")


def timespan_seconds(text: str) -> float | None:
    """`hh:mm:ss`, `d.hh:mm:ss` or with fractions → seconds; None if malformed."""
    match = _TIMESPAN.match(text)
    if not match:
        return None
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


def iter_refs(value: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every `{"$ref": …}` object inside an input, with its dotted path."""
    if isinstance(value, dict):
        if isinstance(value.get("$ref"), str):
            yield path, value
            return
        for key, item in value.items():
            yield from iter_refs(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_refs(item, f"{path}[{index}]")


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def follow(root: Any, path: str) -> Any:
    """Navigate `output.images[0].url`; raises KeyError when the path leads nowhere."""
    node = root
    for key, index in _PATH_PART.findall(path):
        if key:
            if not isinstance(node, dict) or key not in node:
                raise KeyError(path)
            node = node[key]
        else:
            if not isinstance(node, list) or int(index) >= len(node):
                raise KeyError(path)
            node = node[int(index)]
    return node


def resolve_refs(value: Any, root_of: Callable[[str], Any]) -> Any:
    """An input with each `{"$ref": name, "path": …}` in it replaced by what it points at:
    `root_of(name)`, followed along the path; raises KeyError when a path leads nowhere."""
    if isinstance(value, dict):
        ref = value.get("$ref")
        if isinstance(ref, str):
            path = value.get("path") or ""
            root = root_of(ref)
            return follow(root, path) if path else root
        return {k: resolve_refs(v, root_of) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, root_of) for v in value]
    return value


@dataclass
class Step:
    """Runtime state of one step (mutable on purpose: it is the simulation)."""

    index: int
    name: str
    type: str
    input: dict[str, Any]
    priority: str = "normal"
    timeout: str | None = None
    retries: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    status: str = "unassigned"
    started_at: float | None = None
    completed_at: float | None = None
    jobs: list[dict[str, Any]] = field(default_factory=list)
    output: dict[str, Any] | None = None
    deps: set[str] = field(default_factory=set)
    # Simulation only, never persisted:
    timeline: Timeline | None = field(default=None, repr=False, compare=False)
    # How a finished step renders (its metadata excepted), and whether its output holds
    # no blob (so it is served as it is): made once, at its first render after it ended.
    view: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    plain: bool = False
    proc_start: float = 0.0
    proc_end: float = 0.0
    fate: str = "succeeded"
    blocked: bool = False  # failed by moderation (its jobs say so)
    rendered: concurrent.futures.Future[_steps.Rendered] | None = None
    timer_done: bool = False

    def dump(self) -> dict[str, Any]:
        keys = ("index", "name", "type", "input", "priority", "timeout", "retries", "metadata",
                "status", "started_at", "completed_at", "jobs", "output")
        return {key: getattr(self, key) for key in keys} | {"deps": sorted(self.deps)}


@dataclass(eq=False)
class Timeline:
    """Steps of one workflow that began together with the same duration: one timer drives
    them through the phases (a batch of twenty steps costs four timers, not eighty).

    It keeps the simulated duration and the time scale apart, so that a new time scale
    can stretch what is left of it while it runs."""

    workflow: Workflow
    steps: list[Step]
    seconds: float  # the steps' simulated duration
    scale: float  # loop seconds per simulated second, as now in force
    live: int = 0  # members not terminal yet; the last one to finish cancels the timer
    phase: int = 0  # what its pending timer does: enter phase N, or at the last, finish
    handle: asyncio.TimerHandle | None = None

    @property
    def scaled(self) -> float:
        """The steps' duration in loop seconds at the scale now in force."""
        return self.seconds * self.scale

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None


@dataclass
class Workflow:
    """Runtime state of one workflow."""

    id: str
    seq: int
    created_at: float
    base_url: str
    body: dict[str, Any]  # the echoed template fields (tags, metadata, arguments, …)
    steps: list[Step]
    cost: dict[str, Any]
    transactions: dict[str, Any]
    status: str = "unassigned"
    started_at: float | None = None
    completed_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def step(self, name: str) -> Step | None:
        """A step by its name, or by position for `$N` (which also works for named steps)."""
        for step in self.steps:
            if step.name == name:
                return step
        if name.startswith("$") and name[1:].isdigit() and int(name[1:]) < len(self.steps):
            return self.steps[int(name[1:])]
        return None

    def dump(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "created_at": self.created_at,
                "base_url": self.base_url, "body": self.body, "cost": self.cost,
                "transactions": self.transactions, "status": self.status,
                "started_at": self.started_at, "completed_at": self.completed_at,
                "steps": [s.dump() for s in self.steps]}
