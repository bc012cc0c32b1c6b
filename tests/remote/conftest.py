"""Fixtures of the remote's tests: one S3 server per session, a fresh bucket per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.remote.s3server import credentials, make_bucket, s3_server

_buckets = itertools.count(1)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch,
              tmp_path: Path) -> tuple[str, Any]:
    """A new, empty bucket; returns its name and an s3fs filesystem to look inside."""
    credentials(monkeypatch, tmp_path)
    name = f"civflow-test-{next(_buckets)}"
    return name, make_bucket(s3_endpoint, name)
