"""Workflow state over simulated time: timers move steps along, events wake waiters.

All mutation happens on the event loop thread. Steps of one workflow that begin in the
same event with the same duration share a `Timeline` and its one pending `loop.call_later`
handle, so thousands of steps in flight cost a heap entry per batch and no task; each
event (a submit, a timer, a cancel) rolls every workflow it touched up once, at its end.
Rendering runs in a small thread pool when a step enters `processing`, except for the
few types whose output is a little text, rendered on the spot.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import time
from collections.abc import Iterator
from typing import Any

from civflow.emulator import _steps
from civflow.emulator._archive import Archive
from civflow.emulator._blobs import BlobStore
from civflow.emulator._config import EmulatorConfig
from civflow.emulator._ids import iso
from civflow.emulator._index import Index
from civflow.emulator._model import (
    TERMINAL,
    Step,
    Timeline,
    Workflow,
    resolve_refs,
    timespan_seconds,
)
from civflow.emulator._renders import Renders
from civflow.emulator._views import Views

# Shares of a step's duration spent before each next status (why: the real lifecycle
# shows preparing and scheduled briefly before the long processing phase).
_PHASES = (("preparing", 0.05), ("scheduled", 0.10), ("processing", 0.10))


class Clock:
    """Moves steps through their statuses over simulated time, and their workflows along."""

    def __init__(self, config: EmulatorConfig, rng: random.Random, blobs: BlobStore,
                 index: Index, archive: Archive, views: Views) -> None:
        self._config = config
        self._rng = rng  # shared with the request faults, as one seeded sequence
        self._blobs = blobs
        self._index = index
        self._archive = archive
        self._views = views
        self._renders = Renders(blobs)
        self._loop: asyncio.AbstractEventLoop | None = None
        # While an event runs: the steps it began, and the workflows it touched.
        self._starting: list[tuple[Workflow, Step, float]] | None = None
        self._touched: dict[int, Workflow] | None = None

    def start(self, resumed: list[Workflow]) -> None:
        """Bind to the running loop, and take up workflows read back from disk."""
        self._loop = asyncio.get_running_loop()
        with self._event():
            for workflow in resumed:
                self._resume(workflow)

    def close(self) -> None:
        for workflow in self._index.workflows.values():
            for step in workflow.steps:
                if step.timeline is not None:
                    step.timeline.stop()
        self._renders.close()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "Engine.start() was not called"
        return self._loop

    def submit(self, workflow: Workflow) -> None:
        """Begin a new workflow's steps that wait on none other (the rest begin as their
        sources succeed)."""
        with self._event():
            for step in workflow.steps:
                if not step.deps:
                    # `$arguments` references are known now; resolve them before starting.
                    self._resolve_and_begin(workflow, step)
            self._archive.save(workflow)

    def cancel(self, workflow: Workflow) -> None:
        with self._event():
            for step in workflow.steps:
                if step.status not in TERMINAL:
                    step.fate = "canceled"
                    self._finish(workflow, step, "canceled")
            self._roll_up(workflow)

    def drop(self, workflow: Workflow) -> None:
        """Stop a workflow and forget it: its steps still running are canceled."""
        for step in workflow.steps:
            timeline, step.timeline = step.timeline, None
            if timeline is not None:
                timeline.stop()
            step.status = step.status if step.status in TERMINAL else "canceled"
        self._index.remove(workflow)
        workflow.done.set()
        self._archive.forget(workflow)

    def rescale(self, old: float) -> None:
        """Stretch what is left of every timer in flight from the `old` time scale to the
        one now in force, as if the new scale had been in force all along for what is left
        (a scale of 0 makes it due at once; what was due at 0 stays due). Each timeline
        keeps its next event, so steps still pass every status, in order, and finish once."""
        new, now = self._config.time_scale, self.loop.time()
        stretch = new / old if old else 0.0
        for timeline in self._in_flight():
            timeline.scale = new
            if timeline.handle is None:  # its time is over; its render is not yet
                continue
            left = max(0.0, timeline.handle.when() - now) * stretch
            timeline.handle.cancel()
            self._arm(timeline, left)
            if timeline.phase == len(_PHASES):  # processing: progress goes on from here
                for step in timeline.steps:
                    if step.status in TERMINAL:
                        continue
                    done = (now - step.proc_start) * stretch
                    step.proc_start, step.proc_end = now - done, now + left

    def _in_flight(self) -> Iterator[Timeline]:
        """Every timeline still driving a step, once each."""
        seen: set[Timeline] = set()
        for workflow in self._index.workflows.values():
            for step in workflow.steps:
                timeline = step.timeline
                if timeline is not None and timeline.live and timeline not in seen:
                    seen.add(timeline)
                    yield timeline

    def _resume(self, workflow: Workflow) -> None:
        """Take up a workflow read back from disk: work in flight when the emulator
        stopped starts over, like a re-queued job."""
        if workflow.status in TERMINAL:
            workflow.done.set()
            return
        for step in workflow.steps:
            if step.status not in TERMINAL:
                step.status = "unassigned"
        for step in workflow.steps:
            if step.status == "unassigned" and all(
                workflow.step(d).status == "succeeded"  # type: ignore[union-attr]
                for d in step.deps
            ):
                self._resolve_and_begin(workflow, step)

    @contextlib.contextmanager
    def _event(self) -> Iterator[None]:
        """One event of the simulation. Steps it begins get their timers at its end, one
        `Timeline` per workflow and duration; workflows it touched roll up once, at its
        end, before anything else on the loop can look at them."""
        if self._starting is not None:  # nested: the outermost event settles
            yield
            return
        self._starting, self._touched = [], {}
        try:
            yield
        finally:
            while self._starting or self._touched:
                starting, touched = self._starting, self._touched or {}
                self._starting, self._touched = [], {}
                self._launch(starting)
                for workflow in touched.values():
                    self._settle(workflow)
            self._starting = self._touched = None

    def _begin(self, workflow: Workflow, step: Step) -> None:
        """Start the timeline of a step whose inputs are all available."""
        seconds = _steps.duration(step.type, step.input)
        limit = timespan_seconds(step.timeout) if step.timeout else None
        draw = self._rng.random()
        if self._blocked(step):
            step.fate, step.blocked = "failed", True
        elif limit is not None and seconds > limit:
            step.fate, seconds = "expired", limit
        elif draw < self._config.step_failure_rate:
            step.fate = "failed"
        elif draw < self._config.step_failure_rate + self._config.step_expiry_rate:
            step.fate = "expired"
        if self._starting is not None:
            self._starting.append((workflow, step, seconds))
        else:
            self._launch([(workflow, step, seconds)])

    def _launch(self, starting: list[tuple[Workflow, Step, float]]) -> None:
        """Give the steps begun together one timeline per workflow and duration."""
        timelines: dict[tuple[int, float], Timeline] = {}
        scale = self._config.time_scale
        for workflow, step, seconds in starting:
            if step.status in TERMINAL:  # canceled in the same event
                continue
            timeline = timelines.get((id(workflow), seconds))
            if timeline is None:
                timeline = timelines[(id(workflow), seconds)] = Timeline(workflow, [],
                                                                         seconds, scale)
            timeline.steps.append(step)
            step.timeline = timeline
        for timeline in timelines.values():
            timeline.live = len(timeline.steps)
            self._advance(timeline, 0)

    def _blocked(self, step: Step) -> bool:
        """Moderation, as configured: a step whose prompt holds a blocked word."""
        if step.type not in ("imageGen", "textToImage"):  # outputs with images to hold
            return False
        prompt = step.input.get("prompt")
        text = prompt.lower() if isinstance(prompt, str) else ""
        return any(word.lower() in text for word in self._config.blocked_words)

    def _advance(self, timeline: Timeline, phase: int) -> None:
        timeline.phase = phase
        scaled = timeline.scaled
        if phase < len(_PHASES):
            self._arm(timeline, _PHASES[phase][1] * scaled)
            return
        remaining = scaled * (1 - sum(share for _, share in _PHASES))
        workflow, start = timeline.workflow, self.loop.time()
        for step in timeline.steps:
            if step.status in TERMINAL:
                continue
            step.proc_start, step.proc_end = start, start + remaining
            if step.fate == "succeeded":
                step.rendered = self._render(workflow, step)
        self._arm(timeline, remaining)

    def _arm(self, timeline: Timeline, delay: float) -> None:
        """Set the timeline's one timer: to enter its next status, or at last to finish."""
        if timeline.phase < len(_PHASES):
            timeline.handle = self.loop.call_later(delay, self._enter, timeline)
        else:
            timeline.handle = self.loop.call_later(delay, self._timer_done, timeline)

    def _render(self, workflow: Workflow, step: Step) -> concurrent.futures.Future[_steps.Rendered]:
        return self._renders.start(
            step, workflow.base_url,
            lambda: self.loop.call_soon_threadsafe(self._rendered, workflow, step))

    def _enter(self, timeline: Timeline) -> None:
        timeline.handle = None
        phase = timeline.phase
        status = _PHASES[phase][0]
        now = time.time()
        stamp = iso(now) if status == "processing" else ""
        workflow = timeline.workflow
        with self._event():
            for step in timeline.steps:
                if step.status in TERMINAL:
                    continue
                step.status = status
                if status == "processing":
                    step.started_at = now
                for job in step.jobs:
                    job["status"] = status
                    if status == "processing":
                        job["startedAt"] = stamp
            self._roll_up(workflow)
            if timeline.live:
                self._advance(timeline, phase + 1)

    def _timer_done(self, timeline: Timeline) -> None:
        timeline.handle = None
        with self._event():
            for step in timeline.steps:
                step.timer_done = True
                self._maybe_finish(timeline.workflow, step)

    def _rendered(self, workflow: Workflow, step: Step) -> None:
        with self._event():
            self._maybe_finish(workflow, step)

    def _maybe_finish(self, workflow: Workflow, step: Step) -> None:
        if step.status in TERMINAL or not step.timer_done:
            return
        if step.fate != "succeeded":
            self._finish(workflow, step, step.fate)
            return
        assert step.rendered is not None
        if not step.rendered.done():
            return  # the render callback will call again
        try:
            rendered = step.rendered.result()
        except Exception:
            # StepFailure is the expected kind, but any renderer error must fail the
            # job rather than leave the workflow waiting forever.
            self._finish(workflow, step, "failed")
            return
        for info, data in rendered.blobs:
            self._blobs.put(info, data)
        step.output = rendered.output
        self._finish(workflow, step, "succeeded")

    def _finish(self, workflow: Workflow, step: Step, status: str) -> None:
        now = time.time()
        timeline, step.timeline = step.timeline, None
        if timeline is not None:
            timeline.live -= 1
            if not timeline.live:  # nothing left for its timer to move
                timeline.stop()
        step.status = status
        step.completed_at = now
        step.rendered = None
        if step.blocked:
            # As the document allows it: a blob held back with its `blockedReason`, and
            # the output's `errors` (jobs carry no reason in the OpenAPI schema).
            step.output = {"images": [{"type": "image", "id": f"blocked-{job['id']}.jpeg",
                                       "available": False, "blockedReason": "moderation",
                                       "jobId": job["id"]} for job in step.jobs],
                           "errors": ["The prompt was blocked by moderation."]}
        stamp = iso(now)
        for job in step.jobs:
            if job["status"] not in TERMINAL:
                job["status"] = status
                job["completedAt"] = stamp
        for other in workflow.steps:
            if step.name in other.deps and other.status not in TERMINAL:
                if status != "succeeded":
                    self._finish(workflow, other, "canceled")
                elif all(workflow.step(d).status == "succeeded"  # type: ignore[union-attr]
                         for d in other.deps):
                    self._resolve_and_begin(workflow, other)
        self._roll_up(workflow)

    def _resolve_and_begin(self, workflow: Workflow, step: Step) -> None:
        try:
            step.input = resolve_refs(step.input, lambda ref: self._ref_root(workflow, ref))
        except KeyError:
            # A path into the source's output that does not exist: the job cannot run.
            self._finish(workflow, step, "failed")
            return
        self._begin(workflow, step)

    def _ref_root(self, workflow: Workflow, ref: str) -> Any:
        """What a `$ref` names: the workflow's arguments, or a step as the API shows it."""
        if ref == "$arguments":
            return workflow.body.get("arguments") or {}
        source = workflow.step(ref)
        assert source is not None
        return self._views.render_step(workflow, source, workflow.base_url, True)

    def _roll_up(self, workflow: Workflow) -> None:
        """The workflow's status from its steps': now, or at the end of the running event."""
        if self._touched is not None:
            self._touched[id(workflow)] = workflow
        else:
            self._settle(workflow)

    def _settle(self, workflow: Workflow) -> None:
        statuses = [s.status for s in workflow.steps]
        now = time.time()
        if workflow.started_at is None and any(s != "unassigned" for s in statuses):
            workflow.started_at = now
        if all(s in TERMINAL for s in statuses):
            for bad in ("failed", "expired", "canceled"):
                if bad in statuses:
                    workflow.status = bad
                    break
            else:
                workflow.status = "succeeded"
            workflow.completed_at = workflow.completed_at or now
            workflow.done.set()
            if workflow.body.get("ephemeral") and workflow.id in self._index.workflows:
                # Ephemeral workflows are answered to the waiting submit, then forgotten.
                self.drop(workflow)
                return
        else:
            order = ("processing", "scheduled", "preparing", "unassigned")
            running = [s for s in statuses if s not in TERMINAL]
            if any(s in TERMINAL for s in statuses):
                running.append("processing")
            workflow.status = next(s for s in order if s in running)
        self._archive.save(workflow)
