"""Remote bench: `civflow push` / `pull` machinery against a local S3 server, side by
side with s3fs's own bulk `put` / `get` of the same files (the baseline).

Artifacts are a seeded mix like a real pipeline's output: 9 in 10 are 100 KB images,
1 in 10 a 2 MB video. Measured, for civflow (`Remote.push_from` / `Remote.pull_into`,
which list to skip, re-hash before upload and hash before adopting) and for the baseline:

- push and pull: objects/s and MB/s, and civflow's time as a ratio to the baseline's
  (goal <= 1.2),
- a second push of the same set (everything skipped by listing): seconds, and as a
  ratio to the first push (goal: well under a second for 1,000 objects).

The S3 server is moto's server mode in a child process on 127.0.0.1, so it does not
share the client's interpreter. Defaults run in well under a minute (100 artifacts);
`--full` is the issue's 1,000. Bounded: one pass of each, the server is stopped at exit.
Run: .venv/bin/python bench/remote.py [--full | --count N] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from civflow.remote import Remote, RemoteConfig
from civflow.store.objects import ObjectStore

IMAGE = 100_000
VIDEO = 2_000_000
BUCKET = "civflow-bench"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server() -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):  # bounded: 30 s
        try:
            httpx.get(endpoint, timeout=0.5)
            return proc, endpoint
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the S3 server did not start")


def _make(store: ObjectStore, src: Path, count: int, seed: int) -> tuple[list[str], int]:
    rng = random.Random(seed)
    shas, total = [], 0
    for i in range(count):
        size = VIDEO if i % 10 == 9 else IMAGE
        path = src / f"a{i}"
        path.write_bytes(rng.randbytes(size))
        shas.append(store.import_file(path))
        total += size
    return shas, total


def _rate(label: str, seconds: float, objects: int, size: int) -> str:
    return (f"{label:<26} {seconds:7.2f} s  {objects / seconds:8.1f} obj/s  "
            f"{size / 1e6 / seconds:7.1f} MB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--full", action="store_true", help="1,000 artifacts, as the issue")
    parser.add_argument("--jobs", type=int, default=16, help="civflow's transfers in flight")
    args = parser.parse_args()
    count = 1000 if args.full else max(10, min(args.count, 10_000))
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    import s3fs

    server, endpoint = _start_server()
    work = Path(tempfile.mkdtemp(prefix="civflow-bench-remote-"))
    try:
        fs: Any = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint},
                                    skip_instance_cache=True)
        fs.mkdir(BUCKET)
        store = ObjectStore(work / "store")
        (work / "src").mkdir()
        shas, total = _make(store, work / "src", count, seed=20241125)
        print(f"{count} artifacts, {total / 1e6:.1f} MB, S3 server {endpoint}, "
              f"civflow jobs={args.jobs}")

        remote = Remote(RemoteConfig(url=f"s3://{BUCKET}/civflow",
                                     options={"endpoint_url": endpoint}, jobs=args.jobs))
        began = time.perf_counter()
        pushed = remote.push_from(store, shas)
        push_s = time.perf_counter() - began
        assert len(pushed.done) == count, pushed

        sources = [str(store.path_for(sha)) for sha in shas]
        keys = [f"{BUCKET}/baseline/sha256/{sha[:2]}/{sha[2:]}" for sha in shas]
        began = time.perf_counter()
        fs.put(sources, keys)
        base_push_s = time.perf_counter() - began

        began = time.perf_counter()
        again = remote.push_from(store, shas)
        noop_s = time.perf_counter() - began
        assert len(again.skipped) == count, again
        began = time.perf_counter()
        listed = remote.has_many(shas)
        list_s = time.perf_counter() - began
        assert len(listed) == count
        fs.invalidate_cache()
        began = time.perf_counter()
        raw = fs.find(f"{BUCKET}/civflow/sha256", detail=True)
        raw_list_s = time.perf_counter() - began
        assert len(raw) == count

        fresh = ObjectStore(work / "fresh")
        began = time.perf_counter()
        pulled = remote.pull_into(fresh, shas)
        pull_s = time.perf_counter() - began
        assert len(pulled.done) == count, pulled

        (work / "get").mkdir()
        targets = [str(work / "get" / sha) for sha in shas]
        began = time.perf_counter()
        fs.get(keys, targets)
        base_pull_s = time.perf_counter() - began

        print(_rate("civflow push", push_s, count, total))
        print(_rate("s3fs bulk put (baseline)", base_push_s, count, total))
        print(f"{'  push / baseline':<26} {push_s / base_push_s:7.2f} x  (goal <= 1.2)")
        print(_rate("civflow pull", pull_s, count, total))
        print(_rate("s3fs bulk get (baseline)", base_pull_s, count, total))
        print(f"{'  pull / baseline':<26} {pull_s / base_pull_s:7.2f} x  (goal <= 1.2)")
        print(f"{'no-op push (all skipped)':<26} {noop_s:7.3f} s  "
              f"{noop_s / push_s:.3f} of the first push; listing alone {list_s:.3f} s, "
              f"s3fs's own find of the same keys {raw_list_s:.3f} s")
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
