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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from civflow.emulator import _steps
from civflow.emulator._archive import Archive
from civflow.emulator._blobs import BlobStore
from civflow.emulator._config import EmulatorConfig, apply_faults
from civflow.emulator._fetch import Fetcher, no_fetch
from civflow.emulator._ids import WorkflowIds, iso, job_id
from civflow.emulator._index import Index
from civflow.emulator._model import (
    TERMINAL,
    Step,
    Timeline,
    Workflow,
    follow,
    timespan_seconds,
)
from civflow.emulator._pricing import step_prices
from civflow.emulator._views import Views

# Shares of a step's duration spent before each next status (why: the real lifecycle
# shows preparing and scheduled briefly before the long processing phase).
_PHASES = (("preparing", 0.05), ("scheduled", 0.10), ("processing", 0.10))
# Types whose output is a little text computed from the input alone: rendering them takes
# microseconds, less than handing them to a worker thread and back.
_RENDER_INLINE = frozenset({"echo", "promptEnhancement", "chatCompletion"})


@dataclass
class Counters:
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    workflows_created: int = 0
    external_id_hits: int = 0
    buzz_charged: float = 0.0
    creations_by_external_id: dict[str, int] = field(default_factory=dict)
    # Steps of created workflows (each charged with its workflow), by step name: a
    # client that names steps after what they make can prove nothing was made twice.
    steps_created: int = 0
    step_creations: dict[str, int] = field(default_factory=dict)
    buzz_by_step: dict[str, float] = field(default_factory=dict)

    def as_dict(self, engine: Engine) -> dict[str, Any]:
        return {"requests": self.requests, "workflows_created": self.workflows_created,
                "external_id_hits": self.external_id_hits, "buzz_charged": self.buzz_charged,
                "creations_by_external_id": self.creations_by_external_id,
                "steps_created": self.steps_created, "step_creations": self.step_creations,
                "buzz_by_step": self.buzz_by_step,
                "workflows": len(engine.index.workflows), "blobs": len(engine.blobs),
                "buzz_balance": engine.balance}


class Engine:
    """Owns workflows, blobs, money and the simulated clock of one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.missing_airs: set[str] = set(config.missing_airs)
        self.blobs = BlobStore(config.state_dir)
        self.ids = WorkflowIds()
        self.rng = random.Random(config.fault_seed)
        self.counters = Counters()
        self.balance = config.buzz
        self.index = Index()
        self.archive = Archive(config.state_dir, self.index)
        self._seq = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="emu-render")
        self._fetcher = Fetcher(self.blobs)
        self.views = Views(config, self.blobs, lambda: self.loop.time())
        self._loop: asyncio.AbstractEventLoop | None = None
        # While an event runs: the steps it began, and the workflows it touched.
        self._starting: list[tuple[Workflow, Step, float]] | None = None
        self._touched: dict[int, Workflow] | None = None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running loop and resume any persisted workflows."""
        self._loop = asyncio.get_running_loop()
        with self._event():
            for workflow in self.archive.load():
                self.ids.observe(workflow.id)
                self._seq = max(self._seq, workflow.seq)
                self.index.add(workflow)
                self._resume(workflow)

    def close(self) -> None:
        for workflow in self.index.workflows.values():
            for step in workflow.steps:
                if step.timeline is not None:
                    step.timeline.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._fetcher.close()

    def reset(self) -> None:
        """Forget every workflow, blob, count and forgotten AIR: the state as started (the
        fault settings, changed only on purpose, stay as they are)."""
        self.missing_airs = set(self.config.missing_airs)
        for workflow in list(self.index.workflows.values()):
            self._drop(workflow)
        self.index.clear()
        self.blobs.clear()
        self.counters = Counters()
        self.balance = self.config.buzz
        self.rng = random.Random(self.config.fault_seed)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "Engine.start() was not called"
        return self._loop

    # -- creation ---------------------------------------------------------------------

    def create(self, body: dict[str, Any], steps: list[Step], cost: dict[str, Any],
               base_url: str, charge: int) -> Workflow:
        now = time.time()
        self._seq += 1
        currencies = body.get("currencies") or []
        account = currencies[0] if currencies else "yellow"
        transactions = {"list": [{"type": "debit", "amount": charge, "id": str(uuid.uuid4()),
                                  "accountType": account}]} if charge else {"list": []}
        workflow = Workflow(id=self.ids.next(now), seq=self._seq, created_at=now,
                            base_url=base_url, body=body, steps=steps, cost=cost,
                            transactions=transactions)
        self.index.add(workflow)
        external = body.get("externalId")
        if external:
            by_key = self.counters.creations_by_external_id
            by_key[external] = by_key.get(external, 0) + 1
        self.counters.workflows_created += 1
        self.counters.buzz_charged += charge
        for step, buzz in zip(steps, step_prices(steps), strict=True):
            made = self.counters.step_creations
            made[step.name] = made.get(step.name, 0) + 1
            self.counters.steps_created += 1
            by_step = self.counters.buzz_by_step
            by_step[step.name] = by_step.get(step.name, 0.0) + float(buzz)
        if self.balance is not None:
            self.balance -= charge
        for step in steps:
            step.jobs = [self._new_job() for _ in range(_steps.image_count(step.type,
                                                                           step.input)[0])]
        with self._event():
            for step in steps:
                if not step.deps:
                    # `$arguments` references are known now; resolve them before starting.
                    self._resolve_and_begin(workflow, step)
            self.archive.save(workflow)
        return workflow

    @staticmethod
    def _new_job() -> dict[str, Any]:
        return {"id": job_id(), "status": "unassigned", "startedAt": None, "completedAt": None,
                "cost": 1}

    def retag(self, workflow: Workflow, tags: list[str]) -> None:
        self.index.retag(workflow, tags)
        self.archive.save(workflow)

    # -- the simulated lifecycle -------------------------------------------------------

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
        draw = self.rng.random()
        if self._blocked(step):
            step.fate, step.blocked = "failed", True
        elif limit is not None and seconds > limit:
            step.fate, seconds = "expired", limit
        elif draw < self.config.step_failure_rate:
            step.fate = "failed"
        elif draw < self.config.step_failure_rate + self.config.step_expiry_rate:
            step.fate = "expired"
        if self._starting is not None:
            self._starting.append((workflow, step, seconds))
        else:
            self._launch([(workflow, step, seconds)])

    def _launch(self, starting: list[tuple[Workflow, Step, float]]) -> None:
        """Give the steps begun together one timeline per workflow and duration."""
        timelines: dict[tuple[int, float], Timeline] = {}
        scale = self.config.time_scale
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
        return any(word.lower() in text for word in self.config.blocked_words)

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

    def _rescale(self, old: float) -> None:
        """Stretch what is left of every timer in flight from the `old` time scale to the
        one now in force, as if the new scale had been in force all along for what is left
        (a scale of 0 makes it due at once; what was due at 0 stays due). Each timeline
        keeps its next event, so steps still pass every status, in order, and finish once."""
        new, now = self.config.time_scale, self.loop.time()
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
        for workflow in self.index.workflows.values():
            for step in workflow.steps:
                timeline = step.timeline
                if timeline is not None and timeline.live and timeline not in seen:
                    seen.add(timeline)
                    yield timeline

    def set_faults(self, changes: dict[str, Any]) -> list[str]:
        """Change fault settings at run time (see `apply_faults`); a new time scale also
        applies to the work in flight, not only to what begins from now on."""
        old = self.config.time_scale
        problems = apply_faults(self.config, changes)
        if self.config.time_scale != old:
            self._rescale(old)
        return problems

    def _render(self, workflow: Workflow, step: Step) -> concurrent.futures.Future[_steps.Rendered]:
        data, jobs, base = step.input, [job["id"] for job in step.jobs], workflow.base_url
        if step.type in _RENDER_INLINE:
            done: concurrent.futures.Future[_steps.Rendered] = concurrent.futures.Future()
            try:
                done.set_result(_steps.render(step.type, data, jobs, no_fetch))
            except Exception as exc:  # judged when the timer ends, like a worker's failure
                done.set_exception(exc)
            return done
        future = self._pool.submit(_steps.render, step.type, data, jobs,
                                   lambda url: self._fetcher.fetch(url, base))
        future.add_done_callback(
            lambda _f: self.loop.call_soon_threadsafe(self._rendered, workflow, step))
        return future

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
            self.blobs.put(info, data)
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
            step.input = self._resolve(workflow, step.input)
        except KeyError:
            # A path into the source's output that does not exist: the job cannot run.
            self._finish(workflow, step, "failed")
            return
        self._begin(workflow, step)

    def _resolve(self, workflow: Workflow, value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str):
                path = value.get("path") or ""
                if ref == "$arguments":
                    root: Any = workflow.body.get("arguments") or {}
                else:
                    source = workflow.step(ref)
                    assert source is not None
                    root = self.views.render_step(workflow, source, workflow.base_url, True)
                return follow(root, path) if path else root
            return {k: self._resolve(workflow, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(workflow, v) for v in value]
        return value

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
            if workflow.body.get("ephemeral") and workflow.id in self.index.workflows:
                # Ephemeral workflows are answered to the waiting submit, then forgotten.
                self._drop(workflow)
                return
        else:
            order = ("processing", "scheduled", "preparing", "unassigned")
            running = [s for s in statuses if s not in TERMINAL]
            if any(s in TERMINAL for s in statuses):
                running.append("processing")
            workflow.status = next(s for s in order if s in running)
        self.archive.save(workflow)

    def cancel(self, workflow: Workflow) -> None:
        with self._event():
            for step in workflow.steps:
                if step.status not in TERMINAL:
                    step.fate = "canceled"
                    self._finish(workflow, step, "canceled")
            self._roll_up(workflow)

    def delete(self, workflow: Workflow) -> None:
        """Soft-delete; refunds the charge when no step had reached processing yet."""
        untouched = all(step.started_at is None for step in workflow.steps)
        charged = sum(t["amount"] for t in workflow.transactions["list"]
                      if t["type"] == "debit")
        if untouched and charged:
            workflow.transactions["list"].append(
                {"type": "credit", "amount": charged, "id": str(uuid.uuid4()),
                 "accountType": workflow.transactions["list"][0]["accountType"]})
            self.counters.buzz_charged -= charged
            if self.balance is not None:
                self.balance += charged
        self.cancel(workflow)
        self._drop(workflow)

    def _drop(self, workflow: Workflow) -> None:
        for step in workflow.steps:
            timeline, step.timeline = step.timeline, None
            if timeline is not None:
                timeline.stop()
            step.status = step.status if step.status in TERMINAL else "canceled"
        self.index.remove(workflow)
        workflow.done.set()
        self.archive.forget(workflow)

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

    def preview(self, body: dict[str, Any], steps: list[Step], cost: dict[str, Any],
                base: str) -> dict[str, Any]:
        """The priced Workflow a whatif submit answers with; nothing is stored or run."""
        for step in steps:
            step.jobs = [self._new_job() for _ in range(_steps.image_count(step.type,
                                                                           step.input)[0])]
        currencies = body.get("currencies") or []
        transactions = {"list": [{"type": "debit", "amount": cost["total"],
                                  "accountType": currencies[0] if currencies else "yellow"}]}
        draft = Workflow(id="", seq=0, created_at=time.time(), base_url=base, body=body,
                         steps=steps, cost=cost, transactions=transactions)
        out = self.views.render(draft, base, outputs=False)
        out["id"] = None
        return out
