"""Run-overhead bench: `civflow run` against a served emulator versus a naive poller.

For DAGs of 30, 300 and 3,000 echo instances (three layers, each layer a matrix that
needs the one before), measured side by side in one run:

- wall time / critical-path lower bound (3 layers x 1 s per job; goal <= 1.1),
- API requests per instance from the emulator's counters (goal <= 3; a `whatif` per
  instance is listed apart: it is the cost estimate shown before spending),
- peak RSS of the `civflow run` process,
- the same DAG run by a naive submit-then-poll-every-second httpx script,
- a no-op re-run of the largest pipeline (goal: about a second).

The emulator serves from a child process (uvicorn on 127.0.0.1) at a time scale that
makes an echo job last one second; civflow runs as a subprocess with `--concurrency`
equal to the layer width. Bounded: three sizes, each run stops after --timeout seconds.
Run: .venv/bin/python bench/run_overhead.py [--sizes 30,300,3000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from civflow.emulator import EmulatorConfig, start_emulator

JOB_SECONDS = 1.0
ECHO_SECONDS = 0.5  # the emulator's modelled duration of an echo job
LAYERS = ("a", "b", "c")
KEY = "bench-key"
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


def counters(url: str) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"{url}/_emulator/counters").json()
    return data


def request_counts(data: dict[str, Any]) -> tuple[int, int]:
    """(requests to the API, of which whatif POSTs)."""
    total = sum(n for route, by in data["requests"].items()
                if not route.startswith("GET /v2/resources") for n in by.values())
    posts = sum(data["requests"].get("POST /v2/consumer/workflows", {}).values())
    return total, posts - data["workflows_created"] - data["external_id_hits"]


def run_civflow(url: str, folder: Path, width: int, timeout: float) -> tuple[float, int, int]:
    """(seconds, exit code, peak RSS in KiB) of one `civflow run` subprocess."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CIVITAI_", "CIVFLOW_"))}
    env.update(CIVITAI_BASE_URL=url, CIVITAI_API_KEY=KEY, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "civflow", "run", f"pipelines/dag{width}.yaml", "--yes",
         "--concurrency", str(width)], cwd=folder, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=(folder / "run.err").open("ab"))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30,300,3000")
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    url = parent.recv()
    bound = len(LAYERS) * JOB_SECONDS
    print(f"emulator {url}; one echo job = {JOB_SECONDS:g} s; critical path = {bound:g} s")
    print(f"{'instances':>9} | {'civflow wall/bound':>18} {'req/inst':>8} {'whatif/inst':>11} "
          f"{'peak RSS':>9} {'exit':>4} | {'naive wall/bound':>16} {'req/inst':>8}")
    try:
        with tempfile.TemporaryDirectory(prefix="civflow-bench-") as tmp:
            folder = Path(tmp)
            (folder / ".civflow").mkdir()
            (folder / "pipelines").mkdir()
            for size in sizes:
                width = max(1, size // len(LAYERS))
                (folder / "pipelines" / f"dag{width}.yaml").write_text(pipeline(width))
                httpx.post(f"{url}/_emulator/reset")
                seconds, code, rss = run_civflow(url, folder, width, args.timeout)
                total, whatif = request_counts(counters(url))
                inst = width * len(LAYERS)
                httpx.post(f"{url}/_emulator/reset")
                naive_seconds = asyncio.run(naive(url, width, args.timeout))
                naive_total, _ = request_counts(counters(url))
                print(f"{inst:>9} | {seconds / bound:>18.2f} {(total - whatif) / inst:>8.2f} "
                      f"{whatif / inst:>11.2f} {rss / 1024:>7.0f}MB {code:>4} | "
                      f"{naive_seconds / bound:>16.2f} {naive_total / inst:>8.2f}")
            httpx.post(f"{url}/_emulator/reset")
            seconds, code, rss = run_civflow(url, folder, width, args.timeout)
            total, _ = request_counts(counters(url))
            print(f"no-op re-run of {width * len(LAYERS)} instances: {seconds:.2f} s, "
                  f"{total} API requests, peak RSS {rss / 1024:.0f} MB, exit {code}")
            err = (folder / "run.err").read_text(errors="replace")
            if "error" in err.lower():
                print("civflow stderr (tail):\n" + err[-2000:])
    finally:
        parent.send("stop")
        server.join(timeout=10)


if __name__ == "__main__":
    main()
