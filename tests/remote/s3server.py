"""A real S3-compatible server on 127.0.0.1 for the remote's tests: moto in server mode.

Every request goes over HTTP through s3fs and botocore, as against AWS, MinIO or R2;
nothing of fsspec or civflow is replaced. Credentials are fake but real in form, given
the way a user gives them (environment variables), never through civflow's config.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

KEY_ID = "AKIATESTREMOTE000001"
KEY_SECRET = "remote-test-secret-never-printed-9f2c"
NO_AUTH_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN",
               "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


@contextmanager
def s3_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, present: bool = True) -> None:
    """Credentials in the environment as a user would set them (or none at all); no
    profile files or instance metadata of the machine running the tests are consulted."""
    for name in NO_AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if present:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY_SECRET)
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)


def make_bucket(endpoint: str, bucket: str) -> Any:
    """Create `bucket` on the server (with the credentials of the environment); returns
    an s3fs filesystem on it for the test's own inspection."""
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint},
                           skip_instance_cache=True)
    fs.mkdir(bucket)
    return fs
