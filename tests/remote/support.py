"""Helpers for the remote tests: a real S3-compatible server (moto) on 127.0.0.1, a
small hostile S3 that denies everything, one that never answers, and hand-made projects
whose lockfiles name objects in the local store."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import random
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from civflow.store.lockfile import Artifact, LockedInstance, Lockfile
from civflow.store.objects import ObjectStore
from tests.cli_in_process import exit_code

# Dummy credentials for the emulated S3; real ones never appear in tests.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}

PIPELINE = """\
version: 1
name: {name}
steps:
  shot:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: urn:air:sdxl:checkpoint:civitai:101055@128078
      prompt: a lighthouse
      width: 256
      height: 256
"""


@dataclass(frozen=True)
class S3Server:
    """A moto server in this process; `url` is its endpoint."""

    url: str


@contextmanager
def moto_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def create_bucket(server: S3Server, name: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=server.url, aws_access_key_id="testing",
                          aws_secret_access_key="testing-secret", region_name="us-east-1")
    client.create_bucket(Bucket=name)


class _Denier(http.server.BaseHTTPRequestHandler):
    """Answers every S3 request with 403 AccessDenied, as a bucket policy would."""

    body = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message></Error>")

    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(self.body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _deny

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def denying_server() -> Iterator[str]:
    """A hostile S3 endpoint on 127.0.0.1 that denies every request; yields its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Denier)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server() -> Iterator[str]:
    """An endpoint on 127.0.0.1 that accepts every connection and never answers a
    byte (a hung proxy, a stalled server); yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    listener.settimeout(0.05)  # so the accepting thread sees `stop` promptly
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)  # no connection is accepted after this, so none leaks
        listener.close()
        for connection in held:
            connection.close()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_project(root: Path, *, name: str = "p", count: int = 6, size: int = 20_000,
                 seed: int = 1, url: str | None = None, options: dict[str, str] | None = None,
                 ) -> list[Artifact]:
    """A project at `root` (with .civflow/) whose pipeline `name` has a lockfile naming
    `count` random files of `size` bytes, each in the store and in out/; its artifacts.

    With `url`, civflow.toml names that remote (and `options` as [remote.options]).
    """
    rng = random.Random(seed)
    (root / ".civflow").mkdir(parents=True, exist_ok=True)
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "pipelines" / f"{name}.yaml").write_text(PIPELINE.format(name=name),
                                                     encoding="utf-8")
    store = ObjectStore(root / ".civflow" / "objects")
    instances: dict[str, LockedInstance] = {}
    artifacts: list[Artifact] = []
    for i in range(count):
        data = rng.randbytes(size)
        rel = f"../out/{name}/shot[{i}]/0.png"
        out = root / "pipelines" / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(data)
        sha = store.import_file(out)
        artifact = Artifact(blob_id=f"blob-{i}", sha256=sha, size=size, media_type="image/png",
                            width=None, height=None, path=rel)
        artifacts.append(artifact)
        instances[f"shot[{i}]"] = LockedInstance(
            instance=f"shot[{i}]", step="shot", type="imageGen", fingerprint=f"fp{i}",
            request={}, seed=i, workflow_id=f"wf-{i}", cost=1.0, completed_at=None,
            output={}, artifacts=(artifact,))
    Lockfile(name, instances).save(root / "pipelines" / f"{name}.lock.json")
    if url is not None:
        write_config(root, url, options)
    return artifacts


def write_config(root: Path, url: str, options: dict[str, str] | None = None,
                 extra: str = "") -> None:
    lines = ["[remote]", f"url = {json.dumps(url)}", extra]
    if options:
        lines.append("[remote.options]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    (root / "civflow.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def clone(src: Path, dest: Path) -> None:
    """What `git clone` gives a teammate: pipelines, lockfiles and config, no .civflow/
    and no out/ (a .git folder marks the project root)."""
    (dest / ".git").mkdir(parents=True)
    (dest / "pipelines").mkdir()
    for path in (src / "pipelines").iterdir():
        if path.is_file():
            (dest / "pipelines" / path.name).write_bytes(path.read_bytes())
    if (src / "civflow.toml").is_file():
        (dest / "civflow.toml").write_bytes((src / "civflow.toml").read_bytes())


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`civflow ARGS` in this process: (exit code, stdout, stderr) of that command alone."""
    capsys.readouterr()
    code = exit_code(*args)
    out = capsys.readouterr()
    return code, out.out, out.err
