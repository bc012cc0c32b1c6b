"""Push and pull through `civflow.remote` against a local S3 server, side by side with
fsspec's own bulk `put` / `get` of the same files as the baseline.

Run: .venv/bin/python bench/remote.py            # 200 artifacts (~60 MB), under a minute
     .venv/bin/python bench/remote.py --full     # the issue's 1,000 artifacts (~290 MB)

The artifacts are a seeded mix: nine in ten are 100 KB "images", one in ten a 2 MB
"video". moto's S3 server runs in its own process on 127.0.0.1 (so it does not share
this process's GIL). Reported for each side: objects/s and MB/s for push and pull, the
ratio civflow / baseline (goal: at most 1.2), and a second push of the same set, which
civflow skips by listing (goal: well under a second for 1,000 objects) while the
baseline uploads everything again. civflow's push also re-hashes every local object
and its pull hashes every download before adopting it; the baseline does neither.
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
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civflow.remote import Remote, RemoteConfig
from civflow.store.objects import ObjectStore

IMAGE = 100_000
VIDEO = 2_000_000


@contextmanager
def s3_server() -> Iterator[str]:
    """moto's S3 server in a child process on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                              "-p", str(port)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):  # bounded: 20 s at most
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise SystemExit("moto server did not start")
        yield url
    finally:
        child.terminate()
        child.wait(timeout=10)


def _make(folder: Path, count: int, seed: int) -> list[Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    files = []
    for i in range(count):
        size = VIDEO if i % 10 == 9 else IMAGE
        path = folder / f"{i:05d}.{'mp4' if size == VIDEO else 'png'}"
        path.write_bytes(rng.randbytes(size))
        files.append(path)
    return files


def _timed(work: Callable[[], Any]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="artifacts (default 200)")
    parser.add_argument("--full", action="store_true", help="1,000 artifacts, as the issue")
    parser.add_argument("--jobs", type=int, default=None,
                        help="civflow transfers in flight (default: the remote's default)")
    args = parser.parse_args()
    count = 1000 if args.full else args.count
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    work = Path(tempfile.mkdtemp(prefix="civflow-bench-remote-"))
    try:
        files = _make(work / "src", count, seed=20261125)
        total = sum(p.stat().st_size for p in files)
        store = ObjectStore(work / "a" / "objects")
        shas = [store.import_file(p) for p in files]
        with s3_server() as endpoint:
            import fsspec

            options = {"endpoint_url": endpoint}
            fs = fsspec.filesystem("s3", skip_instance_cache=True, **options)
            fs.mkdir("baseline")
            fs.mkdir("civflow")
            keys = [f"baseline/sha256/{s[:2]}/{s[2:]}" for s in shas]
            sources = [str(store.path_for(s)) for s in shas]
            base_push = _timed(lambda: fs.put(sources, keys))
            base_again = _timed(lambda: fs.put(sources, keys))
            got = work / "baseline-get"
            got.mkdir()
            base_pull = _timed(lambda: fs.get(keys, [str(got / s) for s in shas]))

            config = RemoteConfig(url="s3://civflow/team", options=options)
            remote = Remote(config)
            if args.jobs:
                remote.jobs = args.jobs
            pushed: list[Any] = []
            ours_push = _timed(lambda: pushed.append(remote.push_from(store, shas)))
            again: list[Any] = []
            ours_again = _timed(lambda: again.append(remote.push_from(store, shas)))
            listing = _timed(lambda: remote.has_many(shas))
            fresh = ObjectStore(work / "b" / "objects")
            pulled: list[Any] = []
            ours_pull = _timed(lambda: pulled.append(remote.pull_into(fresh, shas)))
        assert len(pushed[0].done) == count and len(again[0].skipped) == count
        assert len(pulled[0].done) == count

        mb = total / 1e6
        print(f"{count} artifacts, {mb:.0f} MB ({count - count // 10} x 100 KB, "
              f"{count // 10} x 2 MB), moto S3 on 127.0.0.1, civflow jobs={remote.jobs}")
        print(f"{'':14}{'civflow':>22}{'fsspec bulk':>22}{'ratio':>8}")
        for label, ours, base in (("push", ours_push, base_push),
                                  ("pull", ours_pull, base_pull)):
            print(f"{label:14}{count / ours:9.0f} obj/s {mb / ours:6.1f} MB/s"
                  f"{count / base:9.0f} obj/s {mb / base:6.1f} MB/s{ours / base:8.2f}")
        print(f"{'second push':14}{ours_again:13.3f} s (all skipped){base_again:13.3f} s "
              f"(re-sent){ours_again / base_again:8.3f}")
        print(f"second push / first push: civflow {ours_again / ours_push:.3f}, "
              f"fsspec bulk {base_again / base_push:.3f}; "
              f"listing {count} objects: {listing:.3f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
