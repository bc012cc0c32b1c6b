"""Run-overhead bench: `civflow run` against a served emulator, three ways side by side.

For DAGs of 30, 300 and 3,000 echo instances (three layers, each layer a matrix that
`needs` the one before, no data passed), and a 100-lane three-step chain (each lane's
b takes its a's output, its c its b's), measured in one run, each pipeline in three
modes:

- one workflow per instance (`--batch 1`, what civflow did before batching),
- batching (`--batch N`, fusion off with CIVFLOW_FUSE=0),
- batching + fusion (`--batch N`),

printing wall time / critical path (3 layers x 1 s per job), POSTs that create work per
instance, all API requests per instance, and peak RSS of the `civflow run` process.
Goals (issue 24, defaults): at 3,000 instances wall <= 1.5x the critical path and <= 0.1
POST per instance; the 100-lane chain <= 1.2x. Wall time includes the interpreter's start,
imports, checking, planning and the whatif estimate a consented run prints; the in-run
column leaves those out.

Reading the lanes row: b and c echo a's message but each layer sets its own step
`timeout`, so every instance's request is its own and every POST is new work (the
count of POSTs answered with an existing workflow, printed under the row, stays 0).
Fused, b and c are sent before their input is known and run, as any real chain's steps
would (see docs/guide/batching.md, "What fusion cannot cover"). Each mode starts from
an emptied emulator, lockfile and journal: no case reuses another's bodies.

The emulator serves from a child process (uvicorn on 127.0.0.1) at a time scale that
makes an echo job last one second; civflow runs as a subprocess with `--concurrency`
equal to the layer width. Bounded: each run stops after --timeout seconds.
Run: .venv/bin/python bench/run_overhead.py [--sizes 30,300,3000] [--batch 20] [--repeat 3]
(--repeat N: each cell is the median of N runs, the modes taking turns.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from civflow.emulator import EmulatorConfig, start_emulator

JOB_SECONDS = 1.0
ECHO_SECONDS = 0.5  # the emulator's modelled duration of an echo job
LAYERS = ("a", "b", "c")
KEY = "bench-key-0123456789"
REPO = Path(__file__).resolve().parents[1]


def _serve(conn: Connection) -> None:
    with start_emulator(EmulatorConfig(time_scale=JOB_SECONDS / ECHO_SECONDS)) as emu:
        conn.send(emu.url)
        conn.recv()


def pipeline(width: int) -> str:
    values = ", ".join(str(i) for i in range(width))
    lines = ["version: 1", f"name: dag{width}", "steps:"]
    for n, layer in enumerate(LAYERS):
        lines += [f"  {layer}:", "    type: echo", f"    matrix: {{i: [{values}]}}"]
        if n:
            lines.append(f"    needs: [{LAYERS[n - 1]}]")
        lines += ["    input:", f"      message: \"{layer} {{{{ matrix.i }}}}\""]
    return "\n".join(lines) + "\n"


def lanes(width: int) -> str:
    """`width` lanes a -> b -> c: each b takes its own a's output, each c its b's. Each
    layer has its own step `timeout` (far above a job's length), so no two instances
    send the same request: every POST is new work, none is answered by another's
    `externalId`."""
    values = ", ".join(str(i) for i in range(width))
    lines = ["version: 1", f"name: lanes{width}", "steps:"]
    for n, layer in enumerate(LAYERS):
        lines += [f"  {layer}:", "    type: echo", f"    matrix: {{i: [{values}]}}",
                  f"    timeout: \"00:{10 + n}:00\"", "    input:"]
        if n:
            lines.append(f"      message: \"{{{{ steps.{LAYERS[n - 1]}.outputs[matrix.i]"
                         f".message }}}}\"")
        else:
            lines.append("      message: \"lane {{ matrix.i }}\"")
    return "\n".join(lines) + "\n"


def counters(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{url}/_emulator/counters").json()
    return data


def request_counts(data: dict[str, Any]) -> tuple[int, int]:
    """(requests to the API, POSTs that created or re-found a workflow)."""
    total = sum(n for route, by in data["requests"].items()
                if not route.startswith("GET /v2/resources") for n in by.values())
    return total, data["workflows_created"] + data["external_id_hits"]


MODES = (("one/instance", "1", "1"), ("batching", "{n}", "0"), ("batch+fusion", "{n}", "1"))


def run_civflow(url: str, folder: Path, name: str, width: int, timeout: float,
                batch: str, fuse: str) -> tuple[float, int, int]:
    """(seconds, exit code, peak RSS in KiB) of one `civflow run` subprocess."""
    env = _as_installed()
    env.update(CIVITAI_BASE_URL=url, CIVITAI_API_KEY=KEY, PYTHONPATH=str(REPO),
               CIVFLOW_FUSE=fuse)
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "civflow", "run", f"pipelines/{name}.yaml", "--yes",
         "--concurrency", str(width), "--batch", batch], cwd=folder, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=(folder / "run.err").open("ab"))
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            break
        time.sleep(0.01)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, process.returncode, usage.ru_maxrss


def _as_installed() -> dict[str, str]:
    """The environment of an installed civflow: no CIVITAI_/CIVFLOW_ settings from the
    caller, and bytecode cached (PYTHONDONTWRITEBYTECODE, common in containers, would
    make every run recompile civflow's modules and measure that instead)."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("CIVITAI_", "CIVFLOW_")) and k != "PYTHONDONTWRITEBYTECODE"}


def warm_bytecode() -> None:
    """Compile civflow once before anything is timed, as a first run would."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "civflow")],
                   env=_as_installed(), stdout=subprocess.DEVNULL, check=True)


async def naive(url: str, width: int, timeout: float) -> float:
    """Submit a layer, poll every workflow once a second until all are done, next layer."""
    headers = {"Authorization": f"Bearer {KEY}"}
    limits = httpx.Limits(max_connections=64)
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=60) as client:
        for layer in LAYERS:
            async def submit(i: int, layer: str = layer) -> str:
                body = {"steps": [{"$type": "echo", "name": "0",
                                   "input": {"message": f"{layer} {i}"}}]}
                answer = await client.post("/v2/consumer/workflows", json=body)
                return str(answer.json()["id"])
            pending = set(await asyncio.gather(*(submit(i) for i in range(width))))
            while pending:
                if time.perf_counter() - start > timeout:
                    raise TimeoutError("naive run over time")
                await asyncio.sleep(1.0)

                async def poll(workflow_id: str) -> str | None:
                    answer = await client.get(f"/v2/consumer/workflows/{workflow_id}")
                    done = answer.json()["status"] in ("succeeded", "failed", "canceled",
                                                       "expired")
                    return workflow_id if done else None
                pending -= {w for w in await asyncio.gather(*map(poll, pending)) if w}
    return time.perf_counter() - start


def measure(url: str, folder: Path, name: str, width: int, instances: int,
            timeout: float, batch: int, repeat: int = 1) -> tuple[str, list[int]]:
    """One row: the pipeline in the three modes, side by side, each the median of
    `repeat` runs (by wall time; the modes take turns, so a slow moment of the machine
    falls on all of them alike); and per mode, how many POSTs the API answered with a
    workflow it already had (same `externalId`)."""
    bound = len(LAYERS) * JOB_SECONDS
    runs: list[list[tuple[float, str, int]]] = [[] for _ in MODES]
    for _ in range(max(1, repeat)):
        for m, (_label, size, fuse) in enumerate(MODES):
            for lock in (folder / "pipelines").glob("*.lock.json"):
                lock.unlink()
            # The served emulator announces itself: its runs are previews, kept apart.
            shutil.rmtree(folder / ".civflow" / "runs", ignore_errors=True)
            shutil.rmtree(folder / ".civflow" / "previews", ignore_errors=True)
            httpx.post(f"{url}/_emulator/reset")
            seconds, code, rss = run_civflow(url, folder, name, width, timeout,
                                             size.format(n=batch), fuse)
            data = counters(url)
            total, posts = request_counts(data)
            runs[m].append((seconds, f"{seconds / bound:>5.2f} {in_run(folder) / bound:>5.2f} "
                                     f"{posts / instances:>6.3f} {total / instances:>5.2f} "
                                     f"{rss / 1024:>4.0f}MB {code:>2}",
                            data["external_id_hits"]))
    cells, hits = [], []
    for mode in runs:
        _, cell, hit = sorted(mode)[len(mode) // 2]
        cells.append(cell)
        hits.append(hit)
    return " | ".join(cells), hits


def in_run(folder: Path) -> float:
    """Seconds from the journal's first record to its last: the run without the
    interpreter's start, imports and planning."""
    stamps = []
    for path in (folder / ".civflow").glob("**/runs/*/journal.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            stamps.append(datetime.fromisoformat(json.loads(line)["at"].replace("Z", "+00:00")))
    return (max(stamps) - min(stamps)).total_seconds() if stamps else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30,300,3000")
    parser.add_argument("--lanes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per cell; each cell shows the median run (by wall time)")
    parser.add_argument("--naive", action="store_true",
                        help="also time a naive submit-then-poll script per size")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    warm_bytecode()
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    url = parent.recv()
    bound = len(LAYERS) * JOB_SECONDS
    print(f"emulator {url}; one echo job = {JOB_SECONDS:g} s; critical path = {bound:g} s; "
          f"--batch {args.batch}")
    print("each mode: wall / critical path, in-run (journal's first to last record) / "
          "critical path, POSTs/instance, requests/instance, peak RSS, exit code")
    head = " | ".join(f"{label:^35}" for label, _, _ in MODES)
    print(f"{'pipeline':>16} | {head}")
    try:
        with tempfile.TemporaryDirectory(prefix="civflow-bench-") as tmp:
            folder = Path(tmp)
            (folder / ".civflow").mkdir()
            (folder / "pipelines").mkdir()
            for size in sizes:
                width = max(1, size // len(LAYERS))
                (folder / "pipelines" / f"dag{width}.yaml").write_text(pipeline(width))
                inst = width * len(LAYERS)
                row, _ = measure(url, folder, f"dag{width}", width, inst, args.timeout,
                                 args.batch, args.repeat)
                print(f"{f'{inst} in 3 layers':>16} | {row}", flush=True)
                if args.naive:
                    httpx.post(f"{url}/_emulator/reset")
                    naive_seconds = asyncio.run(naive(url, width, args.timeout))
                    naive_total, _ = request_counts(counters(url))
                    print(f"{'naive poller':>16} | {naive_seconds / bound:>5.2f} {'':>5} "
                          f"{1:>6.3f} {naive_total / inst:>5.2f}", flush=True)
            if args.lanes:
                width = args.lanes
                (folder / "pipelines" / f"lanes{width}.yaml").write_text(lanes(width))
                row, hits = measure(url, folder, f"lanes{width}", width,
                                    width * len(LAYERS), args.timeout, args.batch, args.repeat)
                print(f"{f'{width} lanes x 3':>16} | {row}", flush=True)
                print(f"{'':>16}   (POSTs per lane = 3 x POSTs/instance; POSTs answered "
                      f"with an existing workflow: {' / '.join(map(str, hits))})")
            err = (folder / "run.err").read_text(errors="replace") \
                if (folder / "run.err").exists() else ""
            if "error" in err.lower():
                print("civflow stderr (tail):\n" + err[-2000:])
    finally:
        parent.send("stop")
        server.join(timeout=10)


if __name__ == "__main__":
    main()
