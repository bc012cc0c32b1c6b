"""`CivitaiClient`: the Backend over async httpx, with retries, error translation and redaction.

Retries. 429, 5xx and network failures are retried with exponential backoff and
full jitter (a 429's `Retry-After` is honoured, capped at `backoff_cap`, which
`CIVFLOW_BACKOFF_CAP` sets for `from_env`); 400, 401, 403 and 404 never are.
Submitting a workflow is retried only when it is safe: the caller puts an
`externalId` in the template (civflow always does), so a POST repeated after a
dropped connection makes the API return the workflow the first POST created instead
of charging twice. Without an `externalId` a submit is retried only when the request
provably never left (the connection could not be opened), and a `whatif` (which
charges nothing) is always retried.

Secrets. The API key is sent only to the API's own origin, never appears in a
message, log line, repr or chained exception text: every text the client builds
is passed through `Key.redact`, and a foreign exception whose text would carry the key
is replaced, as the `__cause__`, by a redacted stand-in. Answers themselves are
returned exactly as sent (a prompt, a URL or an output that happens to contain the
key is data, and data is never rewritten); the key is registered with
`remember_secret`, and every server text civflow prints or journals passes
`clean_text`, which blanks it. A key shorter than `MIN_KEY_LENGTH` is refused: it
could not be blanked from such texts without mangling ordinary words.

Bounds. A hostile or broken server cannot hang or bloat civflow: every API request
must be answered in full within `wait + deadline` seconds, its body is read as a
stream and refused past `max_json_bytes` or past `MAX_DEPTH` levels of nesting; a
download must keep up `download_seconds_per_mb` after a `download_deadline` grace
and stops at `max_download_bytes`. The client never follows a redirect from the API
itself (a 3xx is named as such), downloads only http(s) URLs, and a long-poll `get`
that comes back at once without a terminal status is followed by a growing, jittered
pause (`poll_delay`), so a server ignoring `wait` is not polled in a tight loop.

The work is shared out: `_key.Key` keeps the key, `_wire.Wire` carries one request
through (retries, bounds, error translation), `_download.Downloads` streams a blob to
disk; `CivitaiClient` is the API's endpoints over them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar, overload
from urllib.parse import quote

import httpx

from civflow.client._download import Downloads
from civflow.client._key import KEY_HINT, MIN_KEY_LENGTH, Key
from civflow.client._wire import CHUNK, DEFAULT_BASE_URL, MB, OnRequest, Wire
from civflow.client.base import Download, WorkflowState, clean_text
from civflow.errors import AuthenticationError, FileAccessError, UsageError
from civflow.origin import EMULATOR_HEADER, Origin

__all__ = ["DEFAULT_BASE_URL", "MIN_KEY_LENGTH", "CivitaiClient"]

T = TypeVar("T")
_WORKFLOWS = "/v2/consumer/workflows"
_BLOBS = "/v2/consumer/blobs"
_log = logging.getLogger(__name__)


def _seconds(name: str, text: str) -> float:
    """A non-negative number of seconds from environment variable `name`."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise UsageError(f"{name} must be a number of seconds, not {clean_text(text, 40)!r}",
                         hint=f"unset {name}, or set it to e.g. 30")
    return value


class _Kept(Generic[T]):
    """A setting of the client that one of its parts keeps: read and set on the
    client as an attribute, stored once, as the same name on the part (`part` names
    the client's attribute holding that part)."""

    def __init__(self, part: str) -> None:
        self._part = part
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, client: None, owner: type) -> _Kept[T]: ...
    @overload
    def __get__(self, client: object, owner: type) -> T: ...
    def __get__(self, client: object, owner: type) -> T | _Kept[T]:
        if client is None:
            return self
        value: T = getattr(getattr(client, self._part), self._name)
        return value

    def __set__(self, client: object, value: T) -> None:
        setattr(getattr(client, self._part), self._name, value)


class CivitaiClient:
    """The Civitai orchestration API (or the emulator): its endpoints, each a request
    that a `Wire` carries through (a download: `Downloads`), over httpx connection pools.

    `on_request(method, route, status)` is called for every HTTP attempt, retries
    included, with the route template (`/v2/consumer/workflows/{id}`; `download` for
    blob bytes and each redirect hop) and status 0 when no answer came back.
    `concurrency_limit` caps requests in flight across every caller of this client.

    Bounds (see the module docstring): `timeout` is per network read; `deadline` is
    the whole of one API request attempt, on top of the `wait` it asks for;
    `max_json_bytes` caps an API answer; a download may take `download_deadline`
    plus `download_seconds_per_mb` for every MiB received so far, and at most
    `max_download_bytes`. A long-poll answered early is followed by `poll_delay`:
    from about `poll_floor` doubling to `poll_cap` seconds. `rng` (jitter of
    retries and polls) and `sleep` can be given for tests.

    `transport` replaces the network (httpx's own seam): every request, downloads
    included, goes to it through one pool; tests pass `httpx.ASGITransport` over the
    emulator's app to exercise the protocol in-process, without sockets.

    The settings given as keywords stay readable and settable as attributes; those
    of a part (`backoff_cap`, `max_download_bytes`, …) are kept by that part alone.
    """

    base_url: _Kept[httpx.URL] = _Kept("_wire")
    max_attempts: _Kept[int] = _Kept("_wire")
    backoff_base: _Kept[float] = _Kept("_wire")
    backoff_cap: _Kept[float] = _Kept("_wire")
    deadline: _Kept[float] = _Kept("_wire")
    max_json_bytes: _Kept[int] = _Kept("_wire")
    on_request: _Kept[OnRequest | None] = _Kept("_wire")
    download_deadline: _Kept[float] = _Kept("_downloads")
    download_seconds_per_mb: _Kept[float] = _Kept("_downloads")
    max_download_bytes: _Kept[int] = _Kept("_downloads")

    def __init__(self, base_url: str, api_key: str | None, *, max_attempts: int = 6,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, timeout: float = 120.0,
                 deadline: float = 60.0, max_json_bytes: int = 16 * MB,
                 download_deadline: float = 300.0, download_seconds_per_mb: float = 5.0,
                 max_download_bytes: int = 8 * 1024 * MB,
                 poll_floor: float = 1.0, poll_cap: float = 10.0,
                 concurrency_limit: int | None = None,
                 origin: Origin | None = None,
                 on_request: OnRequest | None = None,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        key = Key(api_key)
        self._origin = origin
        self.poll_floor = poll_floor
        self.poll_cap = poll_cap
        self._random = rng or random.Random()
        self._sleep_for = sleep or asyncio.sleep
        self._early: dict[str, int] = {}  # workflow id -> long-polls answered at once in a row
        self._wire = Wire(
            httpx.URL(base_url.rstrip("/") + "/"), key, max_attempts=max_attempts,
            backoff_base=backoff_base, backoff_cap=backoff_cap, timeout=timeout,
            deadline=deadline, max_json_bytes=max_json_bytes,
            concurrency_limit=concurrency_limit, on_request=on_request, rng=self._random,
            sleep=self._sleep_for, transport=transport)
        self._downloads = Downloads(
            self._wire, download_deadline=download_deadline,
            download_seconds_per_mb=download_seconds_per_mb,
            max_download_bytes=max_download_bytes)

    def __repr__(self) -> str:
        key = "set" if self._wire.key else "none"
        return f"CivitaiClient(base_url={str(self.base_url)!r}, api_key=<{key}>)"

    @classmethod
    def from_env(cls, api_key_file: Path | None = None, **options: Any) -> CivitaiClient:
        """A client for `CIVITAI_BASE_URL` (default production) with the key from
        `api_key_file` when given, else from `CIVITAI_API_KEY`."""
        if api_key_file is not None:
            try:
                key = Path(api_key_file).read_text(encoding="utf-8").strip()
            except FileNotFoundError as exc:
                raise AuthenticationError(f"{api_key_file}: no such API key file",
                                          hint=KEY_HINT) from exc
            except (OSError, UnicodeDecodeError) as exc:
                raise FileAccessError(path=str(api_key_file),
                                      reason="cannot read the API key file") from exc
            where = str(api_key_file)
        else:
            key = os.environ.get("CIVITAI_API_KEY", "").strip()
            where = "CIVITAI_API_KEY"
        if not key:
            raise AuthenticationError(f"no Civitai API key: {where} is empty or unset",
                                      hint=KEY_HINT)
        base_url = os.environ.get("CIVITAI_BASE_URL", "").strip() or DEFAULT_BASE_URL
        seed = os.environ.get("CIVFLOW_JITTER_SEED", "").strip()
        if seed.isdigit() and "rng" not in options:  # reproducible retry timing in tests
            options["rng"] = random.Random(int(seed))
        cap = os.environ.get("CIVFLOW_BACKOFF_CAP", "").strip()
        if cap and "backoff_cap" not in options:
            options["backoff_cap"] = _seconds("CIVFLOW_BACKOFF_CAP", cap)
        return cls(base_url, key, **options)

    async def __aenter__(self) -> CivitaiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._wire.aclose()

    @property
    def origin(self) -> Origin | None:
        """Which API this is, once known (given, or learnt by `identify`)."""
        return self._origin

    async def identify(self) -> Origin:
        """The emulator or Civitai: the emulator says so in every answer
        (`EMULATOR_HEADER`), so one free request tells, whatever the URL or port."""
        if self._origin is None:
            answer = await self._wire.call("GET", _WORKFLOWS, _WORKFLOWS, what="workflows",
                                           params={"take": "1"})
            self._origin = Origin.EMULATOR if EMULATOR_HEADER in answer.headers \
                else Origin.CIVITAI
        return self._origin

    # -- the operations -------------------------------------------------------------

    async def submit(self, template: Mapping[str, Any], *, wait: int = 0,
                     whatif: bool = False) -> WorkflowState:
        """POST a workflow; retried after a dropped connection only when it cannot charge
        twice (an `externalId` in the template, or a `whatif`)."""
        params = {"wait": str(wait), "whatif": "true" if whatif else "false"}
        safe = whatif or bool(template.get("externalId"))
        data = await self._wire.json("POST", _WORKFLOWS, _WORKFLOWS, params=params,
                                     json_body=dict(template), idempotent=safe, what="workflow",
                                     wait=wait)
        # Only a whatif may come back without an id; a real submit without one could
        # be neither polled nor canceled.
        return WorkflowState.from_json(data, require_id=not whatif)

    async def get(self, workflow_id: str, *, wait: int = 0) -> WorkflowState:
        """The workflow, held by the server up to `wait` seconds until it is terminal.

        A server that ignores `wait` and answers a non-terminal snapshot at once would
        make a caller's poll loop spin; such an answer is returned only after
        `poll_delay(n)` for the n-th early answer in a row for this workflow.
        """
        path = f"{_WORKFLOWS}/{quote(workflow_id, safe='')}"
        started = time.monotonic()
        data = await self._wire.json("GET", path, f"{_WORKFLOWS}/{{id}}",
                                     params={"wait": str(wait), "hideMatureContent": "false"},
                                     what=f"workflow {workflow_id}", wait=wait)
        state = WorkflowState.from_json(data)
        if wait > 0:
            early = time.monotonic() - started < min(wait / 2, 2.0)
            if early and not state.is_terminal:
                count = self._early.get(workflow_id, 0) + 1
                self._early[workflow_id] = count
                delay = self.poll_delay(count)
                _log.debug("the API answered a %ss long-poll at once; pausing %.2fs",
                           wait, delay)
                await self._sleep_for(delay)
            else:
                self._early.pop(workflow_id, None)
        return state

    def poll_delay(self, attempt: int) -> float:
        """The pause after the `attempt`-th (1-based) early long-poll answer in a row:
        `poll_floor` doubling up to `poll_cap`, drawn uniformly from its upper half."""
        ceiling = min(self.poll_cap, self.poll_floor * 2.0 ** min(max(attempt, 1) - 1, 30))
        return ceiling * (0.5 + self._random.random() / 2)

    async def query(self, *, tags: Sequence[str], take: int = 100,
                    cursor: str | None = None) -> tuple[list[WorkflowState], str | None]:
        params: list[tuple[str, str]] = [("tags", t) for t in tags]
        params += [("take", str(take)), ("hideMatureContent", "false")]
        if cursor:
            params.append(("cursor", cursor))
        data = await self._wire.json("GET", _WORKFLOWS, _WORKFLOWS, params=params,
                                     what="workflows")
        items = data.get("items")
        # A listed workflow without an id cannot be acted on: leave it out.
        states = [WorkflowState.from_json(w, require_id=False) for w in items
                  if isinstance(w, Mapping)] if isinstance(items, list) else []
        states = [s for s in states if s.id is not None]
        following = data.get("next")
        return states, following if isinstance(following, str) and following else None

    async def cancel(self, workflow_id: str) -> None:
        path = f"{_WORKFLOWS}/{quote(workflow_id, safe='')}"
        await self._wire.call("PUT", path, f"{_WORKFLOWS}/{{id}}",
                              json_body={"status": "canceled"}, what=f"workflow {workflow_id}")

    async def delete(self, workflow_id: str) -> None:
        path = f"{_WORKFLOWS}/{quote(workflow_id, safe='')}"
        await self._wire.call("DELETE", path, f"{_WORKFLOWS}/{{id}}",
                              what=f"workflow {workflow_id}")

    async def refresh_blob(self, blob_id: str) -> Mapping[str, Any]:
        path = f"{_BLOBS}/{quote(blob_id, safe='')}/refresh"
        return await self._wire.json("POST", path, f"{_BLOBS}/{{id}}/refresh",
                                     what=f"blob {blob_id}")

    async def upload_blob(self, path: Path, media_type: str) -> Mapping[str, Any]:
        """Upload a local file (an input image, or an output Civitai has forgotten),
        streamed from disk in chunks read off the event loop, never held whole."""
        try:
            size = Path(path).stat().st_size
        except OSError as exc:
            raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc

        async def chunks() -> AsyncIterator[bytes]:
            try:
                handle = await asyncio.to_thread(open, path, "rb")
            except OSError as exc:
                raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
            try:
                while chunk := await asyncio.to_thread(handle.read, CHUNK):
                    yield chunk
            finally:
                handle.close()
        # A duplicate upload costs nothing, so the POST is safe to repeat (each attempt
        # reads the file anew). Sending gets the same allowance per MiB as receiving.
        return await self._wire.json("POST", _BLOBS, _BLOBS, content=chunks,
                                     headers={"Content-Type": media_type,
                                              "Content-Length": str(size)},
                                     what="blob upload",
                                     extra_time=size / MB * self.download_seconds_per_mb)

    async def resource(self, air: str) -> Mapping[str, Any]:
        path = f"/v2/resources/{quote(air, safe=':@+')}"
        return await self._wire.json("GET", path, "/v2/resources/{air}", what=f"resource {air}")

    async def download(self, url: str, dest: Path) -> Download:
        """Stream `url` (following redirects) to `dest`, hashing as it goes.

        The bytes go to a temp file beside `dest`, are fsync'd, checked against
        Content-Length, and only then renamed: a partial download never carries the
        final name. A refused signed URL (expired) raises `AuthenticationError` with
        `status=403`; the caller refreshes the blob and downloads the new URL.

        Only http(s) URLs are fetched (also after a redirect): anything else, a
        `file://` URL above all, is refused with `ApiProtocolError` before any request.
        Each attempt must finish within `download_deadline` plus
        `download_seconds_per_mb` per MiB received, and may not exceed
        `max_download_bytes` (refused, not retried).
        """
        return await self._downloads.fetch(url, Path(dest))
