"""How long civflow waits for a workflow: the step's `timeout`, a default, and a grace."""

from __future__ import annotations

import re

from civflow.client.base import WorkflowState
from civflow.loading.model import StepSpec

__all__ = ["DEFAULT_TIMEOUT", "GRACE", "timed_out", "timed_out_steps", "timeout_seconds"]

DEFAULT_TIMEOUT = 3600.0  # seconds a step may take when its `timeout` is unset
GRACE = 120.0  # past the step's own timeout, before civflow gives up on it
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.\d+)?$")


def timeout_seconds(step: StepSpec) -> float:
    """The step's `timeout` (a .NET TimeSpan) in seconds, or the default."""
    match = _TIMESPAN.match(step.timeout or "")
    if match is None:
        return DEFAULT_TIMEOUT
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def timed_out(state: WorkflowState, limit: float) -> WorkflowState:
    """A copy of `state` canceled by civflow at its deadline, with the reason in a job."""
    raw = {**state.raw, "status": "canceled"}
    reason = f"timed out: not finished after {limit:g} s; civflow canceled the workflow"
    steps = [dict(s.raw) for s in state.steps] or [{"$type": "", "name": ""}]
    steps[0]["jobs"] = [{"reason": reason}]
    raw["steps"] = steps
    return WorkflowState.from_json(raw)


def timed_out_steps(state: WorkflowState, limit: float) -> WorkflowState:
    """A workflow civflow canceled at its deadline: the steps that had succeeded keep their
    outputs (their instances are collected); every other step is canceled with the reason."""
    if not state.steps:
        return timed_out(state, limit)
    reason = f"timed out: not finished after {limit:g} s; civflow canceled the workflow"
    steps = []
    for step in state.steps:
        raw = dict(step.raw)
        if step.status != "succeeded":
            raw["status"] = "canceled"
            raw["jobs"] = [{"reason": reason}]
        steps.append(raw)
    return WorkflowState.from_json({**state.raw, "status": "canceled", "steps": steps})
