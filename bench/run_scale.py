"""How `civflow run`'s own overhead grows with the number of steps and instances.

Run: .venv/bin/python bench/run_scale.py [--sizes 100,1000,10000]

The backend is an instant stand-in for the API (every workflow succeeds at once, no
HTTP), so what is timed is civflow alone: planning, scheduling, rendering each
instance against the growing context, journaling (fsync'd, in worker threads) and
lockfile checkpoints. Two shapes per size N:
  chain  N echo steps, each reading the previous step's output (deep graph);
  wide   one echo step with an N-value matrix (many instances, one step).
Linear growth shows as a flat time per instance and a ratio near 10 per tenfold.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civflow.check import check_pipeline
from civflow.client.base import Download, WorkflowState
from civflow.loading import load_pipeline
from civflow.origin import Origin
from civflow.runner import RunOptions, execute, prepare, run_lock


class InstantApi:
    """Every workflow succeeds on submit; echo's output is its input message."""

    # An in-memory stand-in, not Civitai: what it makes is a preview, like the emulator's.
    origin = Origin.EMULATOR

    def __init__(self) -> None:
        self.submitted = 0  # instances (steps of workflows: batching packs several)
        self.workflows = 0

    async def identify(self) -> Origin:
        return self.origin

    async def submit(self, template: Mapping[str, Any], *, wait: int = 0,
                     whatif: bool = False) -> WorkflowState:
        if not whatif:
            self.submitted += len(template["steps"])
            self.workflows += 1
        steps = [{"$type": s["$type"], "name": s["name"], "status": "succeeded",
                  "output": {"message": s["input"].get("message")}} for s in template["steps"]]
        return WorkflowState.from_json({"id": f"wf-{self.workflows}", "status": "succeeded",
                                        "cost": {"total": 0.5}, "steps": steps,
                                        "externalId": template.get("externalId")})

    async def get(self, workflow_id: str, *, wait: int = 0) -> WorkflowState:
        raise AssertionError("an instant workflow is never polled")

    async def query(self, *, tags: Sequence[str], take: int = 100,
                    cursor: str | None = None) -> tuple[list[WorkflowState], str | None]:
        return [], None

    async def cancel(self, workflow_id: str) -> None: ...

    async def delete(self, workflow_id: str) -> None: ...

    async def download(self, url: str, dest: Path) -> Download:
        raise AssertionError("echo has no blobs")

    async def refresh_blob(self, blob_id: str) -> Mapping[str, Any]:
        raise AssertionError("echo has no blobs")

    async def upload_blob(self, path: Path, media_type: str) -> Mapping[str, Any]:
        raise AssertionError("echo has no blobs")

    async def resource(self, air: str) -> Mapping[str, Any]:
        return {"air": air}

    async def aclose(self) -> None: ...


def chain(n: int) -> str:
    steps = ["  s0:\n    type: echo\n    input:\n      message: start\n"]
    steps += [f"  s{i}:\n    type: echo\n    input:\n"
              f"      message: \"{{{{ steps.s{i - 1}.output.message }}}}\"\n" for i in range(1, n)]
    return "version: 1\nname: chain\nsteps:\n" + "".join(steps)


def wide(n: int) -> str:
    values = ", ".join(str(i) for i in range(n))
    return ("version: 1\nname: wide\nsteps:\n  fan:\n    type: echo\n    matrix:\n"
            f"      n: [{values}]\n    input:\n      message: \"tile {{{{ matrix.n }}}}\"\n")


def measure(text: str, n: int) -> tuple[float, float]:
    """(seconds for validate+plan+run, of which run alone) in a fresh project folder."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / ".civflow").mkdir()
        path = root / "bench.yaml"
        path.write_text(text, encoding="utf-8")
        api = InstantApi()
        start = time.perf_counter()
        checked = check_pipeline(load_pipeline(path))
        with run_lock(checked.spec, root):
            prepared = prepare(checked, origin=api.origin)
            ran = time.perf_counter()
            result = asyncio.run(execute(prepared, api, RunOptions(concurrency=64)))
        end = time.perf_counter()
        assert api.submitted == n and result.count("succeeded") == n, result.count("succeeded")
        return end - start, end - ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print(f"{'shape':<6} {'N':>6} {'total s':>9} {'run s':>8} {'run µs/inst':>12} "
          f"{'× per tenfold':>14}")
    for name, shape in (("chain", chain), ("wide", wide)):
        previous: tuple[int, float] | None = None
        for n in sizes:
            total, run = measure(shape(n), n)
            growth = ""
            if previous is not None:
                factor = (run / previous[1]) ** (1 / max(1e-9, _log10(n / previous[0])))
                growth = f"{factor:.1f}"
            print(f"{name:<6} {n:>6} {total:>9.2f} {run:>8.2f} {run / n * 1e6:>12.0f} "
                  f"{growth:>14}", flush=True)
            previous = (n, run)


def _log10(x: float) -> float:
    import math

    return math.log10(x)


if __name__ == "__main__":
    main()
