"""The wire to the API: one request carried through, or turned into civflow's error.

`Wire` holds the connection pools and the key; the policies it applies (retries,
bounds, secrecy) are described in `civitai.py`'s docstring.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import os
import random
import ssl
import threading
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from civflow.client._answers import (
    MAX_DEPTH,
    TooDeep,
    errors_summary,
    is_funds_refusal,
    loads,
    retry_after,
)
from civflow.client._key import KEY_HINT, Key
from civflow.client.base import clean_text
from civflow.errors import (
    ApiError,
    ApiNotFound,
    ApiProtocolError,
    ApiRejected,
    AuthenticationError,
    InsufficientFunds,
    RateLimited,
    ServiceUnavailable,
)

__all__ = ["CHUNK", "DEFAULT_BASE_URL", "MB", "Answer", "Content", "OnRequest", "Retry", "Wire"]

T = TypeVar("T")
DEFAULT_BASE_URL = "https://orchestration.civitai.com"
CHUNK = 256 * 1024  # bytes read (or sent) at a time
MB = 1024 * 1024
_ERROR_BODY_CAP = 64 * 1024  # bytes of an error answer kept for its message
_POOL_SHARD = 32  # connections per httpx pool
_log = logging.getLogger(__name__)

OnRequest = Callable[[str, str, int], None]

# A request body: bytes, or a factory of a fresh byte stream for each attempt.
Content = bytes | Callable[[], AsyncIterator[bytes]] | None


class Trust:
    """The TLS context every pool shares, verifying as httpx does by default (the CA
    bundle named by SSL_CERT_FILE or SSL_CERT_DIR, else certifi's, with host names
    checked). Loading the bundle takes 30-50 ms of CPU, so it loads on a thread of its
    own, and an https exchange waits until it has. A client that will speak TLS (`now`:
    Civitai over https, or through a proxy) starts loading at once, so its first
    exchange waits no longer than it did; one of an http server (the emulator on
    127.0.0.1) loads it only if it ever fetches from https."""

    def __init__(self, *, now: bool = True) -> None:
        # What ssl.create_default_context() builds before it loads any CA.
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._loaded: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loading = False
        if now:
            self._start()

    def _start(self) -> None:
        if not self._loading:
            self._loading = True
            threading.Thread(target=self._load, name="civflow-ca-bundle", daemon=True).start()

    def _load(self) -> None:
        try:
            if os.environ.get("SSL_CERT_FILE"):
                self.context.load_verify_locations(cafile=os.environ["SSL_CERT_FILE"])
            elif os.environ.get("SSL_CERT_DIR"):
                self.context.load_verify_locations(capath=os.environ["SSL_CERT_DIR"])
            else:
                import certifi

                self.context.load_verify_locations(cafile=certifi.where())
        except BaseException as exc:  # handed to the first https exchange
            self._loaded.set_exception(exc)
        else:
            self._loaded.set_result(None)

    async def ready(self) -> None:
        """Return once the CA bundle is loaded; a bundle that cannot be read is an error
        of this exchange, located by the variable that names it."""
        self._start()
        try:
            if not self._loaded.done():
                await asyncio.wrap_future(self._loaded)
            self._loaded.result()
        except OSError as exc:  # ssl.SSLError included
            named = next((f"{k}={os.environ[k]}" for k in ("SSL_CERT_FILE", "SSL_CERT_DIR")
                          if os.environ.get(k)), "certifi's CA bundle")
            raise ServiceUnavailable(f"cannot verify https servers: {named} could not be "
                                     f"loaded ({exc})",
                                     hint="point SSL_CERT_FILE at a readable PEM bundle, "
                                          "or unset it to use certifi's") from exc


class Retry(Exception):  # internal control flow of the retry loop
    def __init__(self, error: ApiError, delay: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.delay = delay


def _origin_text(url: httpx.URL) -> str:
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}" if url.host else f"{url.scheme}:"


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read in full (within its cap): what `translate` and `json` use."""

    status: int
    headers: httpx.Headers
    content: bytes

    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")


class Wire:
    """One API request carried through: sent over a pool within the concurrency limit
    and its time budget, retried with backoff while another attempt may help, its
    answer read within its cap, and an error status translated into civflow's error;
    `key` decides which requests carry the key and blanks it from every text built here.

    `base_url`, `max_attempts`, `backoff_base`, `backoff_cap`, `deadline`,
    `max_json_bytes` and `on_request` are `CivitaiClient`'s, documented there.
    """

    def __init__(self, base_url: httpx.URL, key: Key, *, max_attempts: int,
                 backoff_base: float, backoff_cap: float, timeout: float, deadline: float,
                 max_json_bytes: int, concurrency_limit: int | None,
                 on_request: OnRequest | None, rng: random.Random,
                 sleep: Callable[[float], Awaitable[None]],
                 transport: httpx.AsyncBaseTransport | None) -> None:
        self.base_url = base_url
        self.key = key
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.deadline = deadline
        self.max_json_bytes = max_json_bytes
        self.on_request = on_request
        self._limit = asyncio.Semaphore(concurrency_limit) if concurrency_limit else None
        self._random = rng
        self._sleep_for = sleep
        options: dict[str, Any] = {
            "timeout": httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            "headers": {"User-Agent": "civflow", "Accept": "application/json"},
            "follow_redirects": False}
        self.trust: Trust | None = None
        self._tls_always = False
        if transport is not None:
            # A given transport has no connections to shard: one pool, which closes it.
            self._pools = [httpx.AsyncClient(transport=transport, **options)]
        else:
            # Through a proxy from the environment even an http exchange may speak TLS.
            proxies = urllib.request.getproxies()
            self._tls_always = any(k in proxies for k in ("http", "https", "all"))
            # One TLS context for every pool, its CAs loaded now if the API speaks TLS.
            self.trust = Trust(now=base_url.scheme == "https" or self._tls_always)
            # httpx scans every connection of its pool on each request, so one pool of a
            # few thousand long-polls costs O(n) per request; several small pools do not.
            size = concurrency_limit or 100
            shards = -(-size // _POOL_SHARD)
            self._pools = [httpx.AsyncClient(
                verify=self.trust.context, limits=httpx.Limits(max_connections=-(-size // shards)),
                **options) for _ in range(shards)]
        self._next_pool = itertools.cycle(self._pools)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    def pool(self) -> httpx.AsyncClient:
        """The pool for the next exchange (they take turns)."""
        return next(self._next_pool)

    async def send(self, pool: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
        """Send `request` on `pool`, its answer streamed: https once the CAs are loaded."""
        if self.trust is not None and (request.url.scheme == "https" or self._tls_always):
            await self.trust.ready()
        return await pool.send(request, stream=True)

    def slot(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """A place among the requests in flight (`concurrency_limit`), held while in use."""
        return self._limit or contextlib.nullcontext()

    async def retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt` until it returns, retrying what it marks retryable (`Retry`)
        with backoff, `max_attempts` times at most: the one retry loop of the client."""
        for number in range(1, self.max_attempts + 1):
            try:
                return await attempt()
            except Retry as retry:
                if number == self.max_attempts:
                    raise retry.error from retry.__cause__
                await self._sleep(number, retry)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _sleep(self, attempt: int, retry: Retry) -> None:
        if retry.delay is not None:
            delay = min(self.backoff_cap, retry.delay)
        else:  # full jitter: uniform over [0, min(cap, base * 2^(attempt-1))]
            delay = self._random.uniform(0, min(self.backoff_cap,
                                                self.backoff_base * 2 ** (attempt - 1)))
        _log.debug("retrying in %.3fs after: %s", delay, self.key.redact(retry.error.message))
        await self._sleep_for(delay)

    def headers_for(self, url: httpx.URL, extra: Mapping[str, str] | None = None
                    ) -> dict[str, str]:
        return {**(extra or {}), **self.key.headers(url, self.base_url)}

    # -- one request ----------------------------------------------------------------

    def record(self, method: str, route: str, status: int) -> None:
        if self.on_request is not None:
            self.on_request(method, route, status)

    def check_scheme(self, url: httpx.URL, what: str) -> None:
        """Refuse a URL civflow must not fetch: anything but http(s) (`file:` above all)."""
        if url.scheme not in ("http", "https"):
            raise ApiProtocolError(self.key.redact(
                f"{what} with scheme '{clean_text(url.scheme, 20)}:'; civflow downloads "
                "only http and https URLs and never opens local files for the API"),
                hint="the service may be misbehaving; nothing was fetched")

    async def json(self, method: str, path: str, route: str, **kwargs: Any
                   ) -> Mapping[str, Any]:
        """The JSON object an API call answered, exactly as sent: data civflow uses or
        records is never rewritten (texts it prints are scrubbed where it prints them)."""
        answer = await self.call(method, path, route, **kwargs)
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

    async def call(self, method: str, path: str, route: str, *, what: str,
                   params: Any = None, json_body: Any = None, content: Content = None,
                   headers: Mapping[str, str] | None = None,
                   idempotent: bool = True, wait: int = 0,
                   extra_time: float = 0.0) -> Answer:
        url = self.base_url.join(path.lstrip("/"))
        # The server may hold the request for `wait` seconds by design; beyond that
        # the whole exchange, body included, gets `deadline` seconds.
        budget = max(0, wait) + self.deadline + extra_time
        return await self.retrying(lambda: self._attempt(
            method, url, route, what=what, params=params, json_body=json_body,
            content=content, headers=headers, idempotent=idempotent, budget=budget))

    async def _attempt(self, method: str, url: httpx.URL, route: str, *, what: str,
                       params: Any, json_body: Any, content: Content,
                       headers: Mapping[str, str] | None, idempotent: bool,
                       budget: float) -> Answer:
        request_headers = self.headers_for(url, headers)
        pool = self.pool()
        try:
            async with self.slot():
                request = pool.build_request(
                    method, url, params=params, json=json_body,
                    content=content() if callable(content) else content,
                    headers=request_headers)
                async with asyncio.timeout(budget):
                    response = await self.send(pool, request)
                    try:
                        answer = await self.read_answer(method, route, response)
                    finally:
                        await response.aclose()
        except (httpx.TransportError, TimeoutError) as exc:
            self.record(method, route, 0)
            if isinstance(exc, TimeoutError):
                text = f"{method} {route}: the API did not answer in full within {budget:g} s"
            else:
                text = (f"{method} {route}: could not reach the API ({type(exc).__name__}"
                        f"{': ' + str(exc) if str(exc) else ''})")
            error = ServiceUnavailable(self.key.redact(text), hint=(
                "check the network and CIVITAI_BASE_URL; the service may be down"))
            # A connection that never opened sent nothing: always safe to try again.
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            if idempotent or never_sent:
                raise Retry(error) from self.key.cause(exc)
            error.hint = ("the request may have reached the API; check the workflow list "
                          "before submitting again")
            raise error from self.key.cause(exc)
        self.record(method, route, answer.status)
        if 300 <= answer.status < 400:
            raise self._redirect_error(method, route, url, answer)
        if answer.status < 300:
            return answer
        raise self.translate(method, route, what, answer, idempotent)

    # -- the answer -----------------------------------------------------------------

    async def read_answer(self, method: str, route: str, response: httpx.Response
                          ) -> Answer:
        """The body of `response`, read as a stream: a success answer larger than
        `max_json_bytes` is refused, an error answer is cut at `_ERROR_BODY_CAP`, and a
        redirect's body is not read at all."""
        status = response.status_code
        if 300 <= status < 400:
            return Answer(status, response.headers, b"")
        success = status < 300
        cap = self.max_json_bytes if success else _ERROR_BODY_CAP
        declared = response.headers.get("Content-Length", "")
        if success and declared.isdigit() and int(declared) > cap:
            raise self._too_big(method, route, status)
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes(CHUNK):
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                if success:
                    raise self._too_big(method, route, status)
                break
        return Answer(status, response.headers, b"".join(chunks)[:cap])

    def _too_big(self, method: str, route: str, status: int) -> ApiProtocolError:
        return ApiProtocolError(
            f"{method} {route}: the API answered more than {self.max_json_bytes:,} bytes; "
            "civflow stopped reading", status=status,
            hint="the service may be misbehaving; try again later")

    def _redirect_error(self, method: str, route: str, url: httpx.URL,
                        answer: Answer) -> ApiProtocolError:
        """A 3xx from the API itself: named, never followed (the key would go along)."""
        location = answer.headers.get("Location")
        try:
            where = _origin_text(url.join(location)) if location else "nowhere"
        except httpx.InvalidURL:
            where = "an unparsable location"
        return ApiProtocolError(self.key.redact(
            f"{method} {route}: the API answered {answer.status} redirect to "
            f"{clean_text(where, 200)}; civflow does not follow redirects from the API"),
            status=answer.status,
            hint="check CIVITAI_BASE_URL: it should name the API itself "
                 f"({DEFAULT_BASE_URL})")

    def translate(self, method: str, route: str, what: str, answer: Answer,
                  idempotent: bool) -> Exception:
        """The civflow error for an error answer, or `Retry` when another attempt may help."""
        status = answer.status
        body = self.key.redact_value(self._body(answer))
        where = f"{method} {route}"
        if status == 400:
            errors = body.get("errors") if isinstance(body, Mapping) else None
            if isinstance(errors, Mapping) and errors:
                message = f"the API rejected the {what}: {errors_summary(errors)}"
            else:
                message = f"the API rejected the {what}: {self._summary(body)}"
            return ApiRejected(self.key.redact(message), status=400,
                               detail=errors if isinstance(errors, Mapping) else body)
        if status == 401:
            return AuthenticationError(f"{where}: the API refused the key (401 Unauthorized)",
                                       status=401, hint=KEY_HINT)
        if status == 403:
            text = self._summary(body)
            if is_funds_refusal(body, text):
                return InsufficientFunds(self.key.redact(f"not enough Buzz for the {what}: {text}"),
                                         status=403, detail=body,
                                         hint="top up Buzz on civitai.com, or run fewer steps")
            return AuthenticationError(self.key.redact(f"{where}: not permitted (403): {text}"),
                                       status=403, detail=body)
        if status in (404, 410):
            return ApiNotFound(self.key.redact(f"{what} not found ({status})"), status=status,
                               detail=body)
        if status == 429:
            delay = retry_after(answer.headers.get("Retry-After"), datetime.now(UTC))
            return Retry(RateLimited(f"{where}: still rate limited (429) after "
                                     f"{self.max_attempts} attempts", status=429,
                                     hint="lower --concurrency or try again later"), delay)
        if status >= 500:
            error = ServiceUnavailable(
                self.key.redact(f"{where}: the API answered {status} after "
                            f"{self.max_attempts} attempts: {self._summary(body)}"),
                status=status, hint="the service may be down; try again later")
            # A 5xx may come after the workflow was created: repeat only what is safe.
            return Retry(error) if idempotent else error
        return ApiError(self.key.redact(f"{where}: the API answered {status}: "
                                    f"{self._summary(body)}"), status=status, detail=body)

    @staticmethod
    def _body(answer: Answer) -> Any:
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
        return self.key.redact(clean_text(text, 300))
