"""Load bench of the emulator: submit and get throughput, and `wait` wake-up latency.

Starts an emulator on loopback (uvicorn via `start_emulator`, in a child process so
the client does not share its interpreter lock) and drives it with an async httpx
client:

1. submit rate: N echo workflows submitted with wait=0 (they stay in flight);
2. get rate: GETs against a nearly empty emulator and with N workflows in flight,
   side by side, so any per-request cost that grows with N shows as a ratio;
3. wake-up latency: N more workflows submitted at a steady pace over one job
   duration, each followed at once by a long-poll `GET ?wait=`, so about N polls are
   parked together at the peak while completions arrive at a rate the machine can
   answer; latency = when the client got the answer - the workflow's `completedAt`;
4. batches, as `civflow run --batch 20` sends them (issue 14), on a second emulator
   whose echo takes 1 s: B workflows of 20 echo steps priced with `whatif`, then all
   submitted at once with `wait`. Reported: the emulator's CPU per step (whatif, and
   submit + run + answer, side by side with the single-step submits of phase 1), how
   far apart it created the workflows (`createdAt`, first to last), and how long after
   each workflow's `completedAt` its answer reached the client.

Bounded: N defaults to 1,000 and every phase stops at --timeout seconds.
Run: .venv/bin/python bench/emulator_load.py [--workflows 1000] [--concurrency 32]
     [--batches 50] [--batch-size 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

import httpx

from civflow.emulator import EmulatorConfig, start_emulator

ECHO = {"steps": [{"$type": "echo", "input": {"message": "load"}}]}


def _serve(conn: Connection, time_scale: float) -> None:
    """Child process: run an emulator, tell its CPU seconds when asked; when told to
    stop, report its counters."""
    with start_emulator(EmulatorConfig(time_scale=time_scale)) as emu:
        conn.send(emu.url)
        while conn.recv() == "cpu":
            conn.send(time.process_time())
        conn.send(emu.counters())


def _cpu(conn: Connection) -> float:
    """CPU seconds the emulator's process has used so far (all its threads)."""
    conn.send("cpu")
    seconds: float = conn.recv()
    return seconds


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def _rate(count: int, concurrency: int, timeout: float,
                request: Callable[[int], Awaitable[httpx.Response]]) -> tuple[float, int]:
    """Requests per second over `count` requests with bounded concurrency; and failures."""
    queue = iter(range(count))
    failures = 0
    deadline = time.perf_counter() + timeout

    async def worker() -> int:
        done = 0
        nonlocal failures
        for index in queue:
            if time.perf_counter() > deadline:
                break
            response = await request(index)
            failures += response.status_code >= 400
            done += 1
        return done

    start = time.perf_counter()
    total = sum(await asyncio.gather(*(worker() for _ in range(concurrency))))
    return total / (time.perf_counter() - start), failures


async def _raw_get(url: str, path: str) -> tuple[int, dict[str, Any]]:
    """One GET on its own connection with asyncio streams.

    The long-polls bypass httpx on purpose: its connection pool does work per request
    that grows with the number of open connections, which would measure the client
    rather than the emulator once a thousand polls are parked.
    """
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                      "Authorization: Bearer bench\r\nConnection: close\r\n\r\n").encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = json.loads(await reader.readexactly(length)) if length else {}
    finally:
        writer.close()
    return status, body


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def main(workflows: int, concurrency: int, timeout: float, batches: int,
               batch_size: int) -> None:
    # Echo takes 0.5 s of simulated time; ×20 = 10 s, so all N are still in flight
    # while the get phase runs and when the long-polls open.
    time_scale = 20.0
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve,
                                                          args=(child, time_scale))
    server.start()
    url = parent.recv()
    try:
        single_cpu = await _drive(url, parent, workflows, concurrency, timeout, time_scale)
    finally:
        parent.send("stop")
        counters: dict[str, Any] = parent.recv()
        server.join(timeout=30)
    print(f"{'workflows created (server counter)':44} {counters['workflows_created']:12d}")
    # A fresh emulator for the batches, so nothing left in flight above is measured.
    parent, child = multiprocessing.get_context("spawn").Pipe()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(child, 2.0))
    server.start()
    url = parent.recv()
    try:
        await _batched(url, parent, batches, batch_size, timeout, single_cpu)
    finally:
        parent.send("stop")
        counters = parent.recv()
        server.join(timeout=30)
    print(f"{'steps created (server counter)':44} {counters['steps_created']:12d}")


async def _batched(url: str, conn: Connection, batches: int, size: int, timeout: float,
                   single_cpu: float) -> None:
    """Phase 4: `batches` workflows of `size` echo steps, priced, then submitted at once."""
    bodies = [{"steps": [{"$type": "echo", "name": f"b{b}-s{s}",
                          "input": {"message": f"batch {b} step {s}"}} for s in range(size)]}
              for b in range(batches)]
    limits = httpx.Limits(max_connections=batches + 8, max_keepalive_connections=batches + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout + 30,
                                 headers={"Authorization": "Bearer bench"}) as client:
        async def post(body: dict[str, Any], **params: Any) -> tuple[httpx.Response, float]:
            response = await client.post("/v2/consumer/workflows", json=body, params=params)
            return response, time.time()

        start = _cpu(conn)
        priced = await asyncio.gather(*(post(b, whatif="true") for b in bodies))
        after_whatif = _cpu(conn)
        answers = await asyncio.gather(*(post(b, wait=int(timeout)) for b in bodies))
        after_run = _cpu(conn)
    steps = batches * size
    failures = sum(r.status_code != 200 for r, _ in [*priced, *answers])
    finished = [(r.json(), at) for r, at in answers if r.status_code == 200]
    created = [_timestamp(w["createdAt"]) for w, _ in finished]
    lags = [(at - _timestamp(w["completedAt"])) * 1000 for w, at in finished
            if w.get("completedAt")]
    whatif_us = (after_whatif - start) / steps * 1e6
    run_us = (after_run - after_whatif) / steps * 1e6
    print(f"batches: {batches} workflows of {size} echo steps (1 s each), whatif then wait")
    print(f"{'emulator CPU per step, whatif (us)':44} {whatif_us:12.0f}")
    print(f"{'emulator CPU per step, submit+run+answer (us)':44} {run_us:12.0f}")
    print(f"{'  same, single-step workflows of phase 1 (us)':44} {single_cpu:12.0f}")
    print(f"{'  ratio batched / single-step':44} {run_us / single_cpu:12.2f}")
    if created:
        print(f"{'createdAt spread, first to last (ms)':44} "
              f"{(max(created) - min(created)) * 1000:12.0f}")
    if lags:
        print(f"{'answer after completedAt p50 (ms)':44} {statistics.median(lags):12.1f}")
        print(f"{'answer after completedAt max (ms)':44} {max(lags):12.1f}")
    print(f"{'failed requests (whatif + submit)':44} {failures:12d}")


async def _drive(url: str, conn: Connection, workflows: int, concurrency: int,
                 timeout: float, time_scale: float) -> float:
    """Phases 1 to 3; returns the emulator's CPU microseconds per single-step submit."""
    limits = httpx.Limits(max_connections=workflows + concurrency + 8,
                          max_keepalive_connections=workflows + concurrency + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout + 30,
                                 headers={"Authorization": "Bearer bench"}) as client:
        few = [(await client.post("/v2/consumer/workflows", json=ECHO)).json()["id"]
               for _ in range(10)]
        get_few, _ = await _rate(
            2000, concurrency, timeout,
            lambda i: client.get(f"/v2/consumer/workflows/{few[i % len(few)]}"))

        ids: list[str] = []

        async def submit(_: int) -> httpx.Response:
            response = await client.post("/v2/consumer/workflows", json=ECHO)
            ids.append(response.json()["id"])
            return response

        before = _cpu(conn)
        submit_rate, submit_failures = await _rate(workflows, concurrency, timeout, submit)
        single_cpu = (_cpu(conn) - before) / max(len(ids), 1) * 1e6
        get_many, get_failures = await _rate(
            2000, concurrency, timeout,
            lambda i: client.get(f"/v2/consumer/workflows/{ids[i % len(ids)]}"))

        async def long_poll(workflow_id: str) -> float | None:
            opened = time.time()
            status, body = await _raw_get(
                url, f"/v2/consumer/workflows/{workflow_id}?wait={int(timeout)}")
            answered = time.time()
            if status != 200 or not body.get("completedAt"):
                return None
            completed = datetime.fromisoformat(
                body["completedAt"].replace("Z", "+00:00")).timestamp()
            # Only waits that were really parked before completion measure a wake-up.
            return answered - completed if completed > opened else None

        parked = peak = 0

        async def submit_and_wait(delay: float) -> float | None:
            nonlocal parked, peak
            await asyncio.sleep(delay)
            response = await client.post("/v2/consumer/workflows", json=ECHO)
            parked += 1
            peak = max(peak, parked)
            try:
                return await long_poll(response.json()["id"])
            finally:
                parked -= 1

        # Spread over one job duration (0.5 s × time_scale): the first completes about
        # when the last is submitted, so nearly all N are parked at once.
        spread = 0.5 * time_scale
        polls = await asyncio.gather(*(submit_and_wait(spread * i / workflows)
                                       for i in range(workflows)))
        latencies = [p * 1000 for p in polls if p is not None]

    print(f"emulator load bench: {workflows} echo workflows, time_scale {time_scale:g}, "
          f"client concurrency {concurrency}")
    print(f"{'measure':44} {'value':>12}")
    print(f"{'submit (wait=0) requests/s':44} {submit_rate:12.0f}")
    print(f"{'get requests/s, 10 workflows stored':44} {get_few:12.0f}")
    print(f"{f'get requests/s, {len(ids)} workflows in flight':44} {get_many:12.0f}")
    print(f"{'get rate ratio (in flight / few)':44} {get_many / get_few:12.2f}")
    if latencies:
        print(f"{'long-polls parked at once (peak)':44} {peak:12d}")
        print(f"{'wait wake-ups measured':44} {len(latencies):12d}")
        print(f"{'wake-up latency p50 (ms)':44} {statistics.median(latencies):12.1f}")
        print(f"{'wake-up latency p95 (ms)':44} {_percentile(latencies, 0.95):12.1f}")
        print(f"{'wake-up latency max (ms)':44} {max(latencies):12.1f}")
    print(f"{'failed requests (submit, get)':44} {submit_failures:>6d},{get_failures:>5d}")
    return single_cpu

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.workflows, args.concurrency, args.timeout, args.batches,
                     args.batch_size))
