"""A remote that lists but never sends an object: every transfer is bounded.

A proxy on 127.0.0.1 passes S3 requests to the real S3 server (moto) and holds object
downloads forever, as a stalled server or a broken proxy does. A pull then costs the
remote's `timeout` per attempt, not botocore's defaults under s3fs's retries (which
held `civflow pull` for over six minutes), and fails as one rendered error.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.remote.s3server import credentials
from tests.remote.support import clone, make_project, run_cli, write_config

BUCKET = "stalled"


@contextmanager
def stalling_proxy(upstream: str) -> Iterator[str]:
    """Forward every request to `upstream`, except reads of objects under `sha256/`,
    which get no answer until the proxy stops; yields the proxy's URL."""
    target = urllib.parse.urlsplit(upstream)
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            path = urllib.parse.urlsplit(self.path)
            if self.command in ("GET", "HEAD") and "/sha256/" in path.path \
                    and "list-type" not in path.query:
                stop.wait()  # the object's bytes never come
                self.close_connection = True
                return
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                headers["Host"] = target.netloc
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
            finally:
                connection.close()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        stop.set()
        server.shutdown()
        server.server_close()



def test_a_pull_whose_downloads_hang_ends_at_the_timeout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], s3_endpoint: str) -> None:
    credentials(monkeypatch, tmp_path)
    from tests.remote.s3server import make_bucket

    make_bucket(s3_endpoint, BUCKET)
    a, b = tmp_path / "a", tmp_path / "b"
    url = f"s3://{BUCKET}/civflow"
    make_project(a, count=4, url=url, options={"endpoint_url": s3_endpoint})
    monkeypatch.chdir(a)
    code, _, err = run_cli(capsys, "push")
    assert code == 0, err
    with stalling_proxy(s3_endpoint) as proxy:
        clone(a, b)
        write_config(b, url, {"endpoint_url": proxy}, extra="timeout = 1")
        monkeypatch.chdir(b)
        code, _, err = run_cli(capsys, "pull")
    assert code == 1, err
    assert err.startswith(f"error: remote {url}: "), err
    assert "downloading" in err and "[remote] timeout" in err, err
    assert "Traceback" not in err
