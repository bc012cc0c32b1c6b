"""Identifiers and timestamps in the formats the real service uses."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def iso(ts: float) -> str:
    """Unix seconds as ISO-8601 UTC with a `Z`, like the service's .NET timestamps."""
    # isoformat is `%Y-%m-%dT%H:%M:%S.%f+00:00` here, and a quarter cheaper than strftime.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class WorkflowIds:
    """Ids like `0-20261124161530123`: a millisecond timestamp, bumped to stay unique."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self, now: float) -> str:
        stamp = int(datetime.fromtimestamp(now, UTC).strftime("%Y%m%d%H%M%S%f")[:-3])
        with self._lock:
            # Two submits in the same millisecond must still get distinct ids.
            self._last = max(stamp, self._last + 1)
            return f"0-{self._last}"

    def observe(self, workflow_id: str) -> None:
        """Account for an id loaded from disk so new ids never collide with it."""
        _, _, digits = workflow_id.partition("-")
        if digits.isdigit():
            with self._lock:
                self._last = max(self._last, int(digits))


def blob_id(extension: str) -> str:
    """A ULID-like blob id (26 Crockford base32 characters) plus a file extension."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars)) + "." + extension


def job_id() -> str:
    return str(uuid.uuid4())
