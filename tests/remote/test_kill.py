"""kill -9 in the middle of a push or a pull, then the same command again: no partial
object is ever visible as complete, on the remote or in the local store, and the re-run
finishes the job. Transfers run in their own process (tests/remote/worker.py) against
the real S3 server and a file:// folder."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from civflow.remote import Remote, RemoteConfig
from civflow.store.objects import ObjectStore

REPO = Path(__file__).resolve().parents[2]
COUNT = 80
SIZE = 192_000
POLLS = 20_000  # bounded wait for the first object to appear


def _store_with_objects(root: Path, tmp: Path, seed: int) -> tuple[ObjectStore, list[str]]:
    rng = random.Random(seed)
    store = ObjectStore(root)
    tmp.mkdir(parents=True)
    shas = []
    for i in range(COUNT):
        path = tmp / f"f{i}"
        path.write_bytes(rng.randbytes(SIZE))
        shas.append(store.import_file(path))
    return store, shas


def _spawn(mode: str, store: Path, url: str, endpoint: str,
           shas_file: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with (shas_file.parent / f"{mode}.err").open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "tests.remote.worker", mode, str(store),
                                 url, endpoint, str(shas_file)], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def _kill_when(proc: subprocess.Popen[bytes], started: Callable[[], bool]) -> bool:
    """SIGKILL `proc` once `started()` is true; False when it finished first."""
    for _ in range(POLLS):
        if proc.poll() is not None:
            return False
        if started():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
    proc.kill()
    proc.wait()
    return True


@pytest.fixture(params=["s3", "file"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, Any]:
    """(url, endpoint or '-', an fsspec filesystem to look at the remote with)."""
    if request.param == "s3":
        bucket, fs = request.getfixturevalue("s3_bucket")
        return f"s3://{bucket}/team", request.getfixturevalue("s3_endpoint"), fs
    import fsspec

    return (tmp_path / "remote").as_uri(), "-", fsspec.filesystem("file")


def test_kill_9_during_push_then_again_leaves_only_whole_objects(
        target: tuple[str, str, Any], tmp_path: Path) -> None:
    """Promise: a partial upload is never visible as a complete object."""
    url, endpoint, fs = target
    _, shas = _store_with_objects(tmp_path / "a", tmp_path / "src", seed=11)
    shas_file = tmp_path / "shas.txt"
    shas_file.write_text("\n".join(shas), encoding="utf-8")
    remote = Remote(RemoteConfig(url=url, options={} if endpoint == "-" else
                                 {"endpoint_url": endpoint}))

    proc = _spawn("push", tmp_path / "a", url, endpoint, shas_file)
    killed = _kill_when(proc, lambda: bool(remote.has_many(shas)))
    there = remote.stat_many(shas)
    for sha in there:  # every object listed is whole: its bytes hash to its name
        data = fs.cat_file(remote.key_for(sha))
        assert hashlib.sha256(data).hexdigest() == sha
    if not killed:
        pytest.skip("the push finished before it could be killed")
    assert len(there) < COUNT, "killed, yet everything was there"

    again = _spawn("push", tmp_path / "a", url, endpoint, shas_file)
    assert again.wait() == 0, (tmp_path / "push.err").read_text()
    assert remote.has_many(shas) == set(shas)


def test_kill_9_during_pull_then_again_adopts_only_verified_objects(
        target: tuple[str, str, Any], tmp_path: Path) -> None:
    """Promise: a partial download never enters the store; the re-run completes it."""
    url, endpoint, _ = target
    source, shas = _store_with_objects(tmp_path / "a", tmp_path / "src", seed=12)
    remote = Remote(RemoteConfig(url=url, options={} if endpoint == "-" else
                                 {"endpoint_url": endpoint}))
    assert remote.push_from(source, shas).ok
    shas_file = tmp_path / "shas.txt"
    shas_file.write_text("\n".join(shas), encoding="utf-8")
    fresh = ObjectStore(tmp_path / "b")

    proc = _spawn("pull", tmp_path / "b", url, endpoint, shas_file)
    killed = _kill_when(proc, lambda: any(fresh.has(sha) for sha in shas))
    present = [sha for sha in shas if fresh.has(sha)]
    for sha in present:
        assert fresh.verify(sha), sha
    if not killed:
        pytest.skip("the pull finished before it could be killed")
    assert len(present) < COUNT, "killed, yet everything was there"

    again = _spawn("pull", tmp_path / "b", url, endpoint, shas_file)
    assert again.wait() == 0, (tmp_path / "pull.err").read_text()
    assert all(fresh.verify(sha) for sha in shas)
