"""civflow: declarative workflow-as-code for the Civitai orchestration API.

    checked = civflow.load("pipelines/hero-shot.yaml", vars={"seed": 7})
    print(civflow.plan(checked).counts())
    result = civflow.run(checked, emulator=True)

`load` and `plan` never touch the network; `run` submits (to an in-process
emulator with `emulator=True`, else to `CIVITAI_BASE_URL` with `CIVITAI_API_KEY`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from civflow.errors import (
    ApiError,
    CivflowError,
    Diagnostic,
    Location,
    PipelineInvalid,
    SpendingRefused,
    StepsFailed,
)
from civflow.plan import Decision, Plan, PlanOptions, plan
from civflow.spec.check import Checked

if TYPE_CHECKING:
    from civflow.run import RunOptions, RunResult

__all__ = [
    "ApiError",
    "Checked",
    "CivflowError",
    "Decision",
    "Diagnostic",
    "Location",
    "PipelineInvalid",
    "Plan",
    "PlanOptions",
    "SpendingRefused",
    "StepsFailed",
    "load",
    "plan",
    "run",
]
__version__ = "0.1.0"


def load(path: str | Path, *, vars: Mapping[str, Any] | None = None,
         strict: bool = False) -> Checked:
    """Parse and check a pipeline file; raise PipelineInvalid with located errors."""
    from civflow.spec import load_pipeline
    from civflow.spec.check import check_pipeline

    return check_pipeline(load_pipeline(Path(path), vars), strict=strict)


def run(checked: Checked, *, emulator: bool = False, options: RunOptions | None = None,
        plan_options: PlanOptions | None = None) -> RunResult:
    """Run a checked pipeline to the end and return what happened to every instance.

    Against the real API this spends Buzz without asking: the CLI is where consent
    is asked for. Use `civflow.run.estimate` first when embedding civflow.
    """
    import asyncio

    from civflow.run import RunOptions, execute, prepare
    from civflow.run.connect import open_backend

    opts = options or RunOptions()

    async def main() -> RunResult:
        async with open_backend(emulator, None) as backend:
            return await execute(prepare(checked, plan_options), backend, opts)

    return asyncio.run(main())
