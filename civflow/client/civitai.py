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
is passed through `_redact`, and a foreign exception whose text would carry the key
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
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from civflow.client._answers import (
    MAX_DEPTH,
    TooDeep,
    errors_summary,
    is_funds_refusal,
    loads,
    retry_after,
)
from civflow.client.base import Download, WorkflowState, clean_text, remember_secret
from civflow.errors import (
    ApiError,
    ApiNotFound,
    ApiProtocolError,
    ApiRejected,
    AuthenticationError,
    FileAccessError,
    InsufficientFunds,
    RateLimited,
    ServiceUnavailable,
    UsageError,
)
from civflow.origin import EMULATOR_HEADER, Origin

__all__ = ["DEFAULT_BASE_URL", "CivitaiClient"]

T = TypeVar("T")
DEFAULT_BASE_URL = "https://orchestration.civitai.com"
_WORKFLOWS = "/v2/consumer/workflows"
_BLOBS = "/v2/consumer/blobs"
_MAX_REDIRECTS = 5
_CHUNK = 256 * 1024
_MB = 1024 * 1024
_ERROR_BODY_CAP = 64 * 1024  # bytes of an error answer kept for its message
_POOL_SHARD = 32  # connections per httpx pool
_KEY_SHAPE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: a header-safe token
# Shorter keys are refused: the key is blanked wherever it could be shown, and a key
# like `k` or `test` matches ordinary text (civitai.com keys are 32 hex characters).
MIN_KEY_LENGTH = 16
_KEY_HINT = ("set CIVITAI_API_KEY (create a key at https://civitai.com/user/account), pass "
             "--api-key-file, or try the pipeline offline with --emulator")
_log = logging.getLogger(__name__)

OnRequest = Callable[[str, str, int], None]


# A request body: bytes, or a factory of a fresh byte stream for each attempt.
_Content = bytes | Callable[[], AsyncIterator[bytes]] | None


def _sync(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class _Secret:
    """Holds the key so that no repr, vars() dump or debugger display shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"


class _Redacted(Exception):  # a stand-in cause, never raised on its own
    """The text of a foreign exception with the key blanked out."""


class _Retry(Exception):  # internal control flow of the retry loop
    def __init__(self, error: ApiError, delay: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.delay = delay


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


@dataclass(frozen=True)
class _Answer:
    """An HTTP answer read in full (within its cap): what `_translate` and `_json` use."""

    status: int
    headers: httpx.Headers
    content: bytes

    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


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


def _origin_text(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}" if url.host else f"{url.scheme}:"


class CivitaiClient:
    """The Civitai orchestration API (or the emulator) over one async httpx connection pool.

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
    """

    def __init__(self, base_url: str, api_key: str | None, *, max_attempts: int = 6,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, timeout: float = 120.0,
                 deadline: float = 60.0, max_json_bytes: int = 16 * _MB,
                 download_deadline: float = 300.0, download_seconds_per_mb: float = 5.0,
                 max_download_bytes: int = 8 * 1024 * _MB,
                 poll_floor: float = 1.0, poll_cap: float = 10.0,
                 concurrency_limit: int | None = None,
                 origin: Origin | None = None,
                 on_request: OnRequest | None = None,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[None]] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if api_key is not None:
            api_key = api_key.strip()
            if not api_key:
                raise AuthenticationError("the Civitai API key is empty", hint=_KEY_HINT)
            if not _KEY_SHAPE.match(api_key):
                # Never echo it: a malformed key may still be a real secret with a typo.
                raise AuthenticationError(
                    "the Civitai API key contains spaces or characters a key never has",
                    hint="copy the key again; it is a single token of printable characters")
            if len(api_key) < MIN_KEY_LENGTH:
                raise AuthenticationError(
                    f"the Civitai API key is {len(api_key)} characters long; civflow needs "
                    f"at least {MIN_KEY_LENGTH}",
                    hint="a real key is 32 characters; for the emulator or a CI dry run any "
                         f"random token of {MIN_KEY_LENGTH} or more characters works. civflow "
                         "blanks the key out of what it shows, and a short one would match "
                         "ordinary words in prompts and URLs")
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self._key = _Secret(api_key) if api_key else None
        if self._key is not None:
            remember_secret(self._key.reveal())
        self._origin = origin
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.on_request = on_request
        self.deadline = deadline
        self.max_json_bytes = max_json_bytes
        self.download_deadline = download_deadline
        self.download_seconds_per_mb = download_seconds_per_mb
        self.max_download_bytes = max_download_bytes
        self.poll_floor = poll_floor
        self.poll_cap = poll_cap
        self._limit = asyncio.Semaphore(concurrency_limit) if concurrency_limit else None
        self._random = rng or random.Random()
        self._sleep_for = sleep or asyncio.sleep
        self._early: dict[str, int] = {}  # workflow id -> long-polls answered at once in a row
        options: dict[str, Any] = {
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            "headers": {"User-Agent": "civflow", "Accept": "application/json"},
            "follow_redirects": False}
        if transport is not None:
            # A given transport has no connections to shard: one pool, which closes it.
            self._pools = [httpx.AsyncClient(transport=transport, **options)]
        else:
            # httpx scans every connection of its pool on each request, so one pool of a
            # few thousand long-polls costs O(n) per request; several small pools do not.
            size = concurrency_limit or 100
            shards = -(-size // _POOL_SHARD)
            # One TLS context for every pool: loading the CA bundle costs ~50 ms each time.
            tls = httpx.create_ssl_context()
            self._pools = [httpx.AsyncClient(
                verify=tls, limits=httpx.Limits(max_connections=-(-size // shards)),
                **options) for _ in range(shards)]
        self._next_pool = itertools.cycle(self._pools)

    def __repr__(self) -> str:
        key = "set" if self._key else "none"
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
                                          hint=_KEY_HINT) from exc
            except (OSError, UnicodeDecodeError) as exc:
                raise FileAccessError(path=str(api_key_file),
                                      reason="cannot read the API key file") from exc
            where = str(api_key_file)
        else:
            key = os.environ.get("CIVITAI_API_KEY", "").strip()
            where = "CIVITAI_API_KEY"
        if not key:
            raise AuthenticationError(f"no Civitai API key: {where} is empty or unset",
                                      hint=_KEY_HINT)
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
        for pool in self._pools:
            await pool.aclose()

    @property
    def origin(self) -> Origin | None:
        """Which API this is, once known (given, or learnt by `identify`)."""
        return self._origin

    async def identify(self) -> Origin:
        """The emulator or Civitai: the emulator says so in every answer
        (`EMULATOR_HEADER`), so one free request tells, whatever the URL or port."""
        if self._origin is None:
            answer = await self._call("GET", _WORKFLOWS, _WORKFLOWS, what="workflows",
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
        data = await self._json("POST", _WORKFLOWS, _WORKFLOWS, params=params,
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
        data = await self._json("GET", path, f"{_WORKFLOWS}/{{id}}",
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
        data = await self._json("GET", _WORKFLOWS, _WORKFLOWS, params=params,
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
        await self._call("PUT", path, f"{_WORKFLOWS}/{{id}}", json_body={"status": "canceled"},
                         what=f"workflow {workflow_id}")

    async def delete(self, workflow_id: str) -> None:
        path = f"{_WORKFLOWS}/{quote(workflow_id, safe='')}"
        await self._call("DELETE", path, f"{_WORKFLOWS}/{{id}}", what=f"workflow {workflow_id}")

    async def refresh_blob(self, blob_id: str) -> Mapping[str, Any]:
        path = f"{_BLOBS}/{quote(blob_id, safe='')}/refresh"
        return await self._json("POST", path, f"{_BLOBS}/{{id}}/refresh",
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
                while chunk := await asyncio.to_thread(handle.read, _CHUNK):
                    yield chunk
            finally:
                handle.close()
        # A duplicate upload costs nothing, so the POST is safe to repeat (each attempt
        # reads the file anew). Sending gets the same allowance per MiB as receiving.
        return await self._json("POST", _BLOBS, _BLOBS, content=chunks,
                                headers={"Content-Type": media_type,
                                         "Content-Length": str(size)},
                                what="blob upload",
                                extra_time=size / _MB * self.download_seconds_per_mb)

    async def resource(self, air: str) -> Mapping[str, Any]:
        path = f"/v2/resources/{quote(air, safe=':@+')}"
        return await self._json("GET", path, "/v2/resources/{air}", what=f"resource {air}")

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
        dest = Path(dest)
        try:
            target = self.base_url.join(url)
        except httpx.InvalidURL as exc:
            raise ApiProtocolError(self._redact(
                f"the API gave a blob URL civflow cannot parse: {clean_text(url, 200)}"),
                ) from self._cause(exc)
        self._check_scheme(target, "the API gave a blob URL")
        return await self._retrying(lambda: self._download_once(target, dest))

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` until it returns, retrying what it marks retryable (`_Retry`)
        with backoff, `max_attempts` times at most: the one retry loop of the client."""
        for number in range(1, self.max_attempts + 1):
            try:
                return await attempt()
            except _Retry as retry:
                if number == self.max_attempts:
                    raise retry.error from retry.__cause__
                await self._sleep(number, retry)
        raise AssertionError("unreachable: the loop returns or raises")

    # -- the transport ----------------------------------------------------------------

    def _headers_for(self, url: httpx.URL, extra: Mapping[str, str] | None = None
                     ) -> dict[str, str]:
        headers = dict(extra or {})
        # The key goes only to the API's own origin: never to a CDN or a redirect target.
        if self._key is not None and _origin(url) == _origin(self.base_url):
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return headers

    def _redact(self, text: str) -> str:
        if self._key is not None:
            text = text.replace(self._key.reveal(), "<redacted>")
        return text

    def _redact_value(self, value: Any) -> Any:
        """`value` with the key blanked in every string, however deep (for `detail`)."""
        if isinstance(value, str):
            return self._redact(value)
        if isinstance(value, Mapping):
            return {self._redact(str(k)): self._redact_value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(v) for v in value]
        return value

    def _cause(self, exc: BaseException) -> BaseException:
        """`exc` itself, or a redacted stand-in if its text would show the key."""
        if self._key is not None:
            key = self._key.reveal()
            if key in str(exc) or key in repr(exc):
                return _Redacted(f"{type(exc).__name__}: {self._redact(str(exc))}")
        return exc

    def _record(self, method: str, route: str, status: int) -> None:
        if self.on_request is not None:
            self.on_request(method, route, status)

    async def _sleep(self, attempt: int, retry: _Retry) -> None:
        if retry.delay is not None:
            delay = min(self.backoff_cap, retry.delay)
        else:  # full jitter: uniform over [0, min(cap, base * 2^(attempt-1))]
            delay = self._random.uniform(0, min(self.backoff_cap,
                                                self.backoff_base * 2 ** (attempt - 1)))
        _log.debug("retrying in %.3fs after: %s", delay, self._redact(retry.error.message))
        await self._sleep_for(delay)

    def _check_scheme(self, url: httpx.URL, what: str) -> None:
        """Refuse a URL civflow must not fetch: anything but http(s) (`file:` above all)."""
        if url.scheme not in ("http", "https"):
            raise ApiProtocolError(self._redact(
                f"{what} with scheme '{clean_text(url.scheme, 20)}:'; civflow downloads "
                "only http and https URLs and never opens local files for the API"),
                hint="the service may be misbehaving; nothing was fetched")

    async def _json(self, method: str, path: str, route: str, **kwargs: Any
                    ) -> Mapping[str, Any]:
        """The JSON object an API call answered, exactly as sent: data civflow uses or
        records is never rewritten (texts it prints are scrubbed where it prints them)."""
        answer = await self._call(method, path, route, **kwargs)
        try:
            data = loads(answer.content)
        except TooDeep as exc:
            raise ApiProtocolError(
                f"{method} {route}: the API answered JSON nested more than {MAX_DEPTH} "
                "levels deep; civflow does not read it",
                status=answer.status, hint="the service may be misbehaving") from exc
        except ValueError as exc:
            raise ServiceUnavailable(
                f"{method} {route}: the API answered {answer.status} with a body "
                "that is not JSON", status=answer.status) from exc
        if not isinstance(data, Mapping):
            raise ServiceUnavailable(f"{method} {route}: the API answered {type(data).__name__}"
                                     " where an object was expected",
                                     status=answer.status)
        return data

    async def _call(self, method: str, path: str, route: str, *, what: str,
                    params: Any = None, json_body: Any = None, content: _Content = None,
                    headers: Mapping[str, str] | None = None,
                    idempotent: bool = True, wait: int = 0,
                    extra_time: float = 0.0) -> _Answer:
        url = self.base_url.join(path.lstrip("/"))
        # The server may hold the request for `wait` seconds by design; beyond that
        # the whole exchange, body included, gets `deadline` seconds.
        budget = max(0, wait) + self.deadline + extra_time
        return await self._retrying(lambda: self._attempt(
            method, url, route, what=what, params=params, json_body=json_body,
            content=content, headers=headers, idempotent=idempotent, budget=budget))

    async def _attempt(self, method: str, url: httpx.URL, route: str, *, what: str,
                       params: Any, json_body: Any, content: _Content,
                       headers: Mapping[str, str] | None, idempotent: bool,
                       budget: float) -> _Answer:
        request_headers = self._headers_for(url, headers)
        pool = next(self._next_pool)
        try:
            async with self._limit or contextlib.nullcontext():
                request = pool.build_request(
                    method, url, params=params, json=json_body,
                    content=content() if callable(content) else content,
                    headers=request_headers)
                async with asyncio.timeout(budget):
                    response = await pool.send(request, stream=True)
                    try:
                        answer = await self._read_answer(method, route, response)
                    finally:
                        await response.aclose()
        except (httpx.TransportError, TimeoutError) as exc:
            self._record(method, route, 0)
            if isinstance(exc, TimeoutError):
                text = f"{method} {route}: the API did not answer in full within {budget:g} s"
            else:
                text = (f"{method} {route}: could not reach the API ({type(exc).__name__}"
                        f"{': ' + str(exc) if str(exc) else ''})")
            error = ServiceUnavailable(self._redact(text), hint=(
                "check the network and CIVITAI_BASE_URL; the service may be down"))
            # A connection that never opened sent nothing: always safe to try again.
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            if idempotent or never_sent:
                raise _Retry(error) from self._cause(exc)
            error.hint = ("the request may have reached the API; check the workflow list "
                          "before submitting again")
            raise error from self._cause(exc)
        self._record(method, route, answer.status)
        if 300 <= answer.status < 400:
            raise self._redirect_error(method, route, url, answer)
        if answer.status < 300:
            return answer
        raise self._translate(method, route, what, answer, idempotent)

    async def _read_answer(self, method: str, route: str, response: httpx.Response
                           ) -> _Answer:
        """The body of `response`, read as a stream: a success answer larger than
        `max_json_bytes` is refused, an error answer is cut at `_ERROR_BODY_CAP`, and a
        redirect's body is not read at all."""
        status = response.status_code
        if 300 <= status < 400:
            return _Answer(status, response.headers, b"")
        success = status < 300
        cap = self.max_json_bytes if success else _ERROR_BODY_CAP
        declared = response.headers.get("Content-Length", "")
        if success and declared.isdigit() and int(declared) > cap:
            raise self._too_big(method, route, status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes(_CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                if success:
                    raise self._too_big(method, route, status)
                break
        return _Answer(status, response.headers, b"".join(chunks)[:cap])

    def _too_big(self, method: str, route: str, status: int) -> ApiProtocolError:
        return ApiProtocolError(
            f"{method} {route}: the API answered more than {self.max_json_bytes:,} bytes; "
            "civflow stopped reading", status=status,
            hint="the service may be misbehaving; try again later")

    def _redirect_error(self, method: str, route: str, url: httpx.URL,
                        answer: _Answer) -> ApiProtocolError:
        """A 3xx from the API itself: named, never followed (the key would go along)."""
        location = answer.headers.get("Location")
        try:
            where = _origin_text(url.join(location)) if location else "nowhere"
        except httpx.InvalidURL:
            where = "an unparsable location"
        return ApiProtocolError(self._redact(
            f"{method} {route}: the API answered {answer.status} redirect to "
            f"{clean_text(where, 200)}; civflow does not follow redirects from the API"),
            status=answer.status,
            hint="check CIVITAI_BASE_URL: it should name the API itself "
                 f"({DEFAULT_BASE_URL})")

    def _translate(self, method: str, route: str, what: str, answer: _Answer,
                   idempotent: bool) -> Exception:
        """The civflow error for an error answer, or `_Retry` when another attempt may help."""
        status = answer.status
        body = self._redact_value(self._body(answer))
        where = f"{method} {route}"
        if status == 400:
            errors = body.get("errors") if isinstance(body, Mapping) else None
            if isinstance(errors, Mapping) and errors:
                message = f"the API rejected the {what}: {errors_summary(errors)}"
            else:
                message = f"the API rejected the {what}: {self._summary(body)}"
            return ApiRejected(self._redact(message), status=400,
                               detail=errors if isinstance(errors, Mapping) else body)
        if status == 401:
            return AuthenticationError(f"{where}: the API refused the key (401 Unauthorized)",
                                       status=401, hint=_KEY_HINT)
        if status == 403:
            text = self._summary(body)
            if is_funds_refusal(body, text):
                return InsufficientFunds(self._redact(f"not enough Buzz for the {what}: {text}"),
                                         status=403, detail=body,
                                         hint="top up Buzz on civitai.com, or run fewer steps")
            return AuthenticationError(self._redact(f"{where}: not permitted (403): {text}"),
                                       status=403, detail=body)
        if status in (404, 410):
            return ApiNotFound(self._redact(f"{what} not found ({status})"), status=status,
                               detail=body)
        if status == 429:
            delay = retry_after(answer.headers.get("Retry-After"), datetime.now(UTC))
            return _Retry(RateLimited(f"{where}: still rate limited (429) after "
                                      f"{self.max_attempts} attempts", status=429,
                                      hint="lower --concurrency or try again later"), delay)
        if status >= 500:
            error = ServiceUnavailable(
                self._redact(f"{where}: the API answered {status} after "
                             f"{self.max_attempts} attempts: {self._summary(body)}"),
                status=status, hint="the service may be down; try again later")
            # A 5xx may come after the workflow was created: repeat only what is safe.
            return _Retry(error) if idempotent else error
        return ApiError(self._redact(f"{where}: the API answered {status}: "
                                     f"{self._summary(body)}"), status=status, detail=body)

    @staticmethod
    def _body(answer: _Answer) -> Any:
        try:
            return loads(answer.content)
        except ValueError:  # not JSON, or nested too deep to be worth reading
            return answer.text()

    def _summary(self, body: Any) -> str:
        """A one-line description of an error body; an HTML error page is not dumped."""
        if isinstance(body, Mapping):
            parts = [str(body[k]) for k in ("title", "detail") if body.get(k)]
            text = " - ".join(parts) if parts else "no details"
        elif isinstance(body, str):
            stripped = body.strip()
            if stripped.startswith("<"):
                text = "an HTML error page"
            else:
                text = stripped.strip('"') or "no details"
        else:
            text = str(body)
        return self._redact(clean_text(text, 300))

    async def _download_once(self, url: httpx.URL, dest: Path) -> Download:
        pool = next(self._next_pool)
        started = time.monotonic()
        try:
            async with asyncio.timeout(None) as deadline:
                deadline.reschedule(asyncio.get_running_loop().time() + self.download_deadline)
                for _ in range(_MAX_REDIRECTS + 1):
                    request = pool.build_request("GET", url, headers=self._headers_for(url))
                    async with self._limit or contextlib.nullcontext():
                        response = await pool.send(request, stream=True)
                        try:
                            self._record("GET", "download", response.status_code)
                            if response.is_redirect and "Location" in response.headers:
                                url = url.join(response.headers["Location"])
                                self._check_scheme(url, "a blob download was redirected to a URL")
                                continue
                            if response.status_code >= 400:
                                raise self._download_error(await self._read_answer(
                                    "GET", "download", response))
                            return await self._stream_to(response, dest, deadline)
                        finally:
                            await response.aclose()
        except httpx.TransportError as exc:
            self._record("GET", "download", 0)
            raise _Retry(ServiceUnavailable(self._redact(
                f"download of a blob failed: {type(exc).__name__}"),
                hint="check the network; the service may be down")) from self._cause(exc)
        except TimeoutError as exc:
            self._record("GET", "download", 0)
            raise _Retry(ServiceUnavailable(
                f"download of a blob too slow: not done after {time.monotonic() - started:.0f} s "
                f"(allowed: {self.download_deadline:g} s plus "
                f"{self.download_seconds_per_mb:g} s per MiB received)",
                hint="check the network; the service may be overloaded")) from exc
        raise ServiceUnavailable(f"download: more than {_MAX_REDIRECTS} redirects")

    def _download_error(self, answer: _Answer) -> Exception:
        status = answer.status
        if status in (401, 403):
            return AuthenticationError(
                f"the blob URL was refused ({status}): its signature has probably expired",
                status=status,
                hint="refresh the blob (POST /v2/consumer/blobs/{id}/refresh) and retry")
        if status in (404, 410):
            return ApiNotFound(f"the blob is gone ({status})", status=status)
        error = self._translate("GET", "download", "blob", answer, True)
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
                async for chunk in response.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > self.max_download_bytes:
                        raise self._too_big_download()
                    if first is not None:
                        deadline.reschedule(first + size / _MB * self.download_seconds_per_mb)
                    digest.update(chunk)
                    # Disk writes and the fsync run in a worker thread: a slow disk must
                    # not stall every other request on the event loop.
                    await asyncio.to_thread(handle.write, chunk)
                await asyncio.to_thread(_sync, handle)
            if expected is not None and expected.isdigit() and \
                    int(expected) != response.num_bytes_downloaded:
                raise _Retry(ServiceUnavailable(
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


