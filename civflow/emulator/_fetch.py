"""The bytes behind a URL that a step's input names, for its renderer (on a worker thread)."""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote, urlsplit

import httpx

from civflow.emulator import _steps
from civflow.emulator._blobs import BlobStore

_BLOB_PATH = re.compile(r"^/v2/consumer/blobs/([^/]+)$")


def no_fetch(url: str) -> bytes:
    """The fetch given to a step type that takes no media."""
    raise _steps.StepFailure(f"this step type takes no media: {url}")


class Fetcher:
    """Fetches source media: our own blobs directly, anything else over HTTP."""

    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs
        # Made on the first fetch of a foreign URL (most emulators never make one): a
        # client loads the CA bundle when it is made, ~25 ms.
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    def fetch(self, url: str, base: str) -> bytes:
        """Bytes behind a URL; `base` is this emulator's own address."""
        parts = urlsplit(url)
        match = _BLOB_PATH.match(parts.path)
        if match and (f"{parts.scheme}://{parts.netloc}" == base or unquote(match.group(1))
                      in self._blobs):
            data = self._blobs.data(unquote(match.group(1)))
            if data is None:
                raise _steps.StepFailure(f"blob {match.group(1)} does not exist")
            return data
        with self._http_lock:  # fetches run on the render threads
            if self._http is None:
                self._http = httpx.Client(timeout=10.0, follow_redirects=True)
            client = self._http
        try:
            response = client.get(url)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise _steps.StepFailure(f"cannot fetch {url}: {exc}") from exc
        return response.content

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
