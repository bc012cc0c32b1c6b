"""civflow: declarative workflow-as-code for the Civitai orchestration API.

    import civflow
    checked = civflow.load("pipelines/hero-shot.yaml", vars={"style": "oil painting"})
    print(civflow.plan(checked).counts())          # reads the lockfile, like `civflow plan`
    print(civflow.estimate(checked).total)          # Buzz, by the published formulas
    result = civflow.run(checked, emulator=True)    # works in a notebook cell too
    print(result.table()); result.files["hero"]

`load`, `plan` and `estimate` never touch the network (unless `estimate(whatif=True)`);
`run` / `arun` submit, to an in-process emulator with `emulator=True`, else to
`CIVITAI_BASE_URL` with `CIVITAI_API_KEY`, and only with consent (`yes=True` or
`confirm=`).
"""

from __future__ import annotations

from civflow._api import aestimate, arun, estimate, load, plan, run
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
from civflow.plan import Decision, Plan, PlannedInstance
from civflow.runner import Estimate, InstanceResult, RunResult

__all__ = [
    "ApiError",
    "Checked",
    "CivflowError",
    "Decision",
    "Diagnostic",
    "Estimate",
    "InstanceResult",
    "Location",
    "PipelineInvalid",
    "Plan",
    "PlannedInstance",
    "RunLocked",
    "RunResult",
    "SpendingRefused",
    "StepsFailed",
    "aestimate",
    "arun",
    "estimate",
    "load",
    "plan",
    "run",
]
__version__ = "0.1.0"
