"""Downloads: a result file streamed from its URL to disk, within bounds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from civflow.client._wire import CHUNK, MB, Answer, Retry, Wire
from civflow.client.base import Download, clean_text
from civflow.errors import (
    ApiNotFound,
    ApiProtocolError,
    AuthenticationError,
    FileAccessError,
    ServiceUnavailable,
)

__all__ = ["Downloads"]

_MAX_REDIRECTS = 5


def _sync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class Downloads:
    """A blob's bytes fetched to a file: redirects followed (to http(s) only, the key
    going along only on the API's origin), each attempt held to `download_deadline`
    plus `download_seconds_per_mb` per MiB received and to `max_download_bytes`,
    written beside the file and renamed only once complete, retried through `wire`.
    The three bounds are `CivitaiClient`'s, documented there.
    """

    def __init__(self, wire: Wire, *, download_deadline: float,
                 download_seconds_per_mb: float, max_download_bytes: int) -> None:
        self._wire = wire
        self.download_deadline = download_deadline
        self.download_seconds_per_mb = download_seconds_per_mb
        self.max_download_bytes = max_download_bytes

    async def fetch(self, url: str, dest: Path) -> Download:
        """`url`, resolved against the API's base, streamed to `dest` (what
        `CivitaiClient.download` does, documented there)."""
        try:
            target = self._wire.base_url.join(url)
        except httpx.InvalidURL as exc:
            raise ApiProtocolError(self._wire.key.redact(
                f"the API gave a blob URL civflow cannot parse: {clean_text(url, 200)}"),
                ) from self._wire.key.cause(exc)
        self._wire.check_scheme(target, "the API gave a blob URL")
        return await self._wire.retrying(lambda: self._download_once(target, dest))

    async def _download_once(self, url: httpx.URL, dest: Path) -> Download:
        pool = self._wire.pool()
        started = time.monotonic()
        try:
            async with asyncio.timeout(None) as deadline:
                deadline.reschedule(asyncio.get_running_loop().time() + self.download_deadline)
                for _ in range(_MAX_REDIRECTS + 1):
                    request = pool.build_request("GET", url, headers=self._wire.headers_for(url))
                    async with self._wire.slot():
                        response = await self._wire.send(pool, request)
                        try:
                            self._wire.record("GET", "download", response.status_code)
                            if response.is_redirect and "Location" in response.headers:
                                url = url.join(response.headers["Location"])
                                self._wire.check_scheme(
                                    url, "a blob download was redirected to a URL")
                                continue
                            if response.status_code >= 400:
                                raise self._download_error(await self._wire.read_answer(
                                    "GET", "download", response))
                            return await self._stream_to(response, dest, deadline)
                        finally:
                            await response.aclose()
        except httpx.TransportError as exc:
            self._wire.record("GET", "download", 0)
            raise Retry(ServiceUnavailable(self._wire.key.redact(
                f"download of a blob failed: {type(exc).__name__}"),
                hint="check the network; the service may be down")) from self._wire.key.cause(exc)
        except TimeoutError as exc:
            self._wire.record("GET", "download", 0)
            raise Retry(ServiceUnavailable(
                f"download of a blob too slow: not done after {time.monotonic() - started:.0f} s "
                f"(allowed: {self.download_deadline:g} s plus "
                f"{self.download_seconds_per_mb:g} s per MiB received)",
                hint="check the network; the service may be overloaded")) from exc
        raise ServiceUnavailable(f"download: more than {_MAX_REDIRECTS} redirects")

    def _download_error(self, answer: Answer) -> Exception:
        status = answer.status
        if status in (401, 403):
            return AuthenticationError(
                f"the blob URL was refused ({status}): its signature has probably expired",
                status=status,
                hint="refresh the blob (POST /v2/consumer/blobs/{id}/refresh) and retry")
        if status in (404, 410):
            return ApiNotFound(f"the blob is gone ({status})", status=status)
        error = self._wire.translate("GET", "download", "blob", answer, True)
        return error

    def _too_big_download(self) -> ApiProtocolError:
        return ApiProtocolError(
            f"a blob download is larger than the {self.max_download_bytes:,} bytes allowed; "
            "civflow stopped it",
            hint="raise max_download_bytes if outputs this large are expected")

    async def _stream_to(self, response: httpx.Response, dest: Path,
                         deadline: asyncio.Timeout) -> Download:
        """Write the body to a temp file beside `dest`, then rename it; every MiB that
        arrives pushes the deadline `download_seconds_per_mb` further."""
        expected = response.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and \
                int(expected) > self.max_download_bytes:
            raise self._too_big_download()
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        digest = hashlib.sha256()
        size = 0
        first = deadline.when()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                async for chunk in response.aiter_bytes(CHUNK):
                    size += len(chunk)
                    if size > self.max_download_bytes:
                        raise self._too_big_download()
                    if first is not None:
                        deadline.reschedule(first + size / MB * self.download_seconds_per_mb)
                    digest.update(chunk)
                    # Disk writes and the fsync run in a worker thread: a slow disk must
                    # not stall every other request on the event loop.
                    await asyncio.to_thread(handle.write, chunk)
                await asyncio.to_thread(_sync, handle)
            if expected is not None and expected.isdigit() and \
                    int(expected) != response.num_bytes_downloaded:
                raise Retry(ServiceUnavailable(
                    f"download truncated: {response.num_bytes_downloaded} of {expected} bytes"))
            os.replace(tmp, dest)
        except OSError as exc:
            raise FileAccessError(path=str(dest), reason=exc.strerror or str(exc)) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        media_type = response.headers.get("Content-Type")
        return Download(sha256=digest.hexdigest(), size=size,
                        media_type=media_type.split(";")[0].strip() if media_type else None,
                        path=dest)
