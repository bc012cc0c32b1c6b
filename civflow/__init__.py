"""civflow: declarative workflow-as-code for the Civitai orchestration API.

    import civflow
    checked = civflow.load("pipelines/hero-shot.yaml", vars={"style": "oil painting"})
    print(civflow.plan(checked).counts())          # reads the lockfile, like `civflow plan`
    print(civflow.estimate(checked).total)          # Buzz, by the published formulas
    result = civflow.run(checked, emulator=True)    # works in a notebook cell too
    print(result.table()); result.files["hero"]

`load` (a file), `loads` (text), `plan` and `estimate` never touch the network (unless
`estimate(whatif=True)`); `run` / `arun` submit, to an in-process emulator with
`emulator=True`, to your own `backend=`, else to `CIVITAI_BASE_URL` with
`CIVITAI_API_KEY`, and only with consent (`yes=True` or `confirm=`) unless on the
in-process emulator. `on_event=` hears each typed `Event` of a run; each instance ends
with a `Status`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from civflow.check import Checked
from civflow.errors import (
    ApiError,
    CivflowError,
    Diagnostic,
    Location,
    PipelineInvalid,
    RunLocked,
    SpendingRefused,
    StepsFailed,
)
from civflow.planning import Decision, Plan, PlannedInstance

if TYPE_CHECKING:
    from civflow._api import aestimate, arun, estimate, load, loads, plan, run
    from civflow.runner import Estimate
    from civflow.runner.events import Event, Phase
    from civflow.runner.results import InstanceResult, RunResult, Status

# What runs pipelines is imported on first use: `civflow validate` and `civflow plan`
# then start without the HTTP client, asyncio and the runner (a third of their start).
_LAZY = {name: "civflow._api" for name in ("aestimate", "arun", "estimate", "load", "loads",
                                            "plan", "run")}
_LAZY["Estimate"] = "civflow.runner"
_LAZY.update({name: "civflow.runner.events" for name in ("Event", "Phase")})
_LAZY.update({name: "civflow.runner.results" for name in ("InstanceResult", "RunResult",
                                                          "Status")})
# No submodule shares a public name (the modules are `planning` and `loading`), so
# `civflow.plan` and `civflow.load` are only ever the functions.


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'civflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "ApiError",
    "Checked",
    "CivflowError",
    "Decision",
    "Diagnostic",
    "Estimate",
    "Event",
    "InstanceResult",
    "Location",
    "Phase",
    "PipelineInvalid",
    "Plan",
    "PlannedInstance",
    "RunLocked",
    "RunResult",
    "SpendingRefused",
    "Status",
    "StepsFailed",
    "aestimate",
    "arun",
    "estimate",
    "load",
    "loads",
    "plan",
    "run",
]
__version__ = "0.1.0"
