"""`CivitaiClient`: the Backend over async httpx, with retries, error translation and redaction.

Retries. 429, 5xx and network failures are retried with exponential backoff and
full jitter (a 429's `Retry-After` is honoured, capped at `backoff_cap`); 400, 401,
403 and 404 never are. Submitting a workflow is retried only when it is safe: the
caller puts an `externalId` in the template (civflow always does), so a POST
repeated after a dropped connection makes the API return the workflow the first
POST created instead of charging twice. Without an `externalId` a submit is retried
only when the request provably never left (the connection could not be opened), and
a `whatif` (which charges nothing) is always retried.

Secrets. The API key is sent only to the API's own origin, never appears in a
message, log line, repr or chained exception text: every text the client builds
is passed through `_redact`, and a foreign exception whose text would carry the key
is replaced, as the `__cause__`, by a redacted stand-in.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import itertools
import logging
import os
import random
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from civflow.backends.base import Download, WorkflowState
from civflow.errors import (
    ApiError,
    ApiNotFound,
    ApiRejected,
    AuthenticationError,
    FileAccessError,
    InsufficientFunds,
    RateLimited,
    ServiceUnavailable,
)

__all__ = ["DEFAULT_BASE_URL", "CivitaiClient"]

DEFAULT_BASE_URL = "https://orchestration.civitai.com"
_WORKFLOWS = "/v2/consumer/workflows"
_BLOBS = "/v2/consumer/blobs"
_MAX_REDIRECTS = 5
_CHUNK = 256 * 1024
_POOL_SHARD = 32  # connections per httpx pool
_KEY_SHAPE = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: a header-safe token
_KEY_HINT = ("set CIVITAI_API_KEY (create a key at https://civitai.com/user/account), pass "
             "--api-key-file, or try the pipeline offline with --emulator")
_log = logging.getLogger(__name__)

OnRequest = Callable[[str, str, int], None]


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


def _retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _errors_summary(errors: Mapping[str, Any]) -> str:
    parts = []
    for path, messages in errors.items():
        text = "; ".join(str(m) for m in messages) if isinstance(messages, list) else messages
        parts.append(f"{path}: {text}" if text else str(path))
    return ", ".join(parts)


class CivitaiClient:
    """The Civitai orchestration API (or the emulator) over one async httpx connection pool.

    `on_request(method, route, status)` is called for every HTTP attempt, retries
    included, with the route template (`/v2/consumer/workflows/{id}`; `download` for
    blob bytes and each redirect hop) and status 0 when no answer came back.
    `concurrency_limit` caps requests in flight across every caller of this client.
    """

    def __init__(self, base_url: str, api_key: str | None, *, max_attempts: int = 6,
                 backoff_base: float = 0.5, backoff_cap: float = 30.0, timeout: float = 120.0,
                 concurrency_limit: int | None = None,
                 on_request: OnRequest | None = None) -> None:
        if api_key is not None:
            api_key = api_key.strip()
            if not api_key:
                raise AuthenticationError("the Civitai API key is empty", hint=_KEY_HINT)
            if not _KEY_SHAPE.match(api_key):
                # Never echo it: a malformed key may still be a real secret with a typo.
                raise AuthenticationError(
                    "the Civitai API key contains spaces or characters a key never has",
                    hint="copy the key again; it is a single token of printable characters")
        self.base_url = httpx.URL(base_url.rstrip("/") + "/")
        self._key = _Secret(api_key) if api_key else None
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.on_request = on_request
        self._limit = asyncio.Semaphore(concurrency_limit) if concurrency_limit else None
        self._random = random.Random()
        # httpx scans every connection of its pool on each request, so one pool of a
        # few thousand long-polls costs O(n) per request; several small pools do not.
        size = concurrency_limit or 100
        shards = -(-size // _POOL_SHARD)
        self._pools = [httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            limits=httpx.Limits(max_connections=-(-size // shards)),
            headers={"User-Agent": "civflow", "Accept": "application/json"},
            follow_redirects=False) for _ in range(shards)]
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
        return cls(base_url, key, **options)

    async def __aenter__(self) -> CivitaiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()

    # -- the operations -------------------------------------------------------------

    async def submit(self, template: Mapping[str, Any], *, wait: int = 0,
                     whatif: bool = False) -> WorkflowState:
        """POST a workflow; retried after a dropped connection only when it cannot charge
        twice (an `externalId` in the template, or a `whatif`)."""
        params = {"wait": str(wait), "whatif": "true" if whatif else "false"}
        safe = whatif or bool(template.get("externalId"))
        data = await self._json("POST", _WORKFLOWS, _WORKFLOWS, params=params,
                                json_body=dict(template), idempotent=safe, what="workflow")
        return WorkflowState.from_json(data)

    async def get(self, workflow_id: str, *, wait: int = 0) -> WorkflowState:
        path = f"{_WORKFLOWS}/{quote(workflow_id, safe='')}"
        data = await self._json("GET", path, f"{_WORKFLOWS}/{{id}}",
                                params={"wait": str(wait), "hideMatureContent": "false"},
                                what=f"workflow {workflow_id}")
        return WorkflowState.from_json(data)

    async def query(self, *, tags: Sequence[str], take: int = 100,
                    cursor: str | None = None) -> tuple[list[WorkflowState], str | None]:
        params: list[tuple[str, str]] = [("tags", t) for t in tags]
        params += [("take", str(take)), ("hideMatureContent", "false")]
        if cursor:
            params.append(("cursor", cursor))
        data = await self._json("GET", _WORKFLOWS, _WORKFLOWS, params=params,
                                what="workflows")
        items = data.get("items")
        states = [WorkflowState.from_json(w) for w in items if isinstance(w, Mapping)] \
            if isinstance(items, list) else []
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
        """Upload a local file (an input image, or an output Civitai has forgotten)."""
        try:
            content = Path(path).read_bytes()
        except OSError as exc:
            raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
        # A duplicate upload costs nothing, so the POST is safe to repeat.
        return await self._json("POST", _BLOBS, _BLOBS, content=content,
                                headers={"Content-Type": media_type}, what="blob upload")

    async def resource(self, air: str) -> Mapping[str, Any]:
        path = f"/v2/resources/{quote(air, safe=':@+')}"
        return await self._json("GET", path, "/v2/resources/{air}", what=f"resource {air}")

    async def download(self, url: str, dest: Path) -> Download:
        """Stream `url` (following redirects) to `dest`, hashing as it goes.

        The bytes go to a temp file beside `dest`, are fsync'd, checked against
        Content-Length, and only then renamed: a partial download never carries the
        final name. A refused signed URL (expired) raises `AuthenticationError` with
        `status=403`; the caller refreshes the blob and downloads the new URL.
        """
        dest = Path(dest)
        target = self.base_url.join(url)
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._download_once(target, dest)
            except _Retry as retry:
                if attempt == self.max_attempts:
                    raise retry.error from retry.__cause__
                await self._sleep(attempt, retry)
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
        await asyncio.sleep(delay)

    async def _json(self, method: str, path: str, route: str, **kwargs: Any
                    ) -> Mapping[str, Any]:
        response = await self._call(method, path, route, **kwargs)
        try:
            data = response.json()
        except ValueError as exc:
            raise ServiceUnavailable(
                f"{method} {route}: the API answered {response.status_code} with a body "
                "that is not JSON", status=response.status_code) from exc
        if not isinstance(data, Mapping):
            raise ServiceUnavailable(f"{method} {route}: the API answered {type(data).__name__}"
                                     " where an object was expected",
                                     status=response.status_code)
        return data

    async def _call(self, method: str, path: str, route: str, *, what: str,
                    params: Any = None, json_body: Any = None, content: bytes | None = None,
                    headers: Mapping[str, str] | None = None,
                    idempotent: bool = True) -> httpx.Response:
        url = self.base_url.join(path.lstrip("/"))
        for attempt in range(1, self.max_attempts + 1):
            try:
                return await self._attempt(method, url, route, what=what, params=params,
                                           json_body=json_body, content=content,
                                           headers=headers, idempotent=idempotent)
            except _Retry as retry:
                if attempt == self.max_attempts:
                    raise retry.error from retry.__cause__
                await self._sleep(attempt, retry)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(self, method: str, url: httpx.URL, route: str, *, what: str,
                       params: Any, json_body: Any, content: bytes | None,
                       headers: Mapping[str, str] | None, idempotent: bool) -> httpx.Response:
        request_headers = self._headers_for(url, headers)
        try:
            async with self._limit or contextlib.nullcontext():
                response = await next(self._next_pool).request(
                    method, url, params=params, json=json_body, content=content,
                    headers=request_headers)
        except httpx.TransportError as exc:
            self._record(method, route, 0)
            error = ServiceUnavailable(self._redact(
                f"{method} {route}: could not reach the API ({type(exc).__name__}"
                f"{': ' + str(exc) if str(exc) else ''})"),
                hint="check the network and CIVITAI_BASE_URL; the service may be down")
            # A connection that never opened sent nothing: always safe to try again.
            never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
            if idempotent or never_sent:
                raise _Retry(error) from self._cause(exc)
            error.hint = ("the request may have reached the API; check the workflow list "
                          "before submitting again")
            raise error from self._cause(exc)
        self._record(method, route, response.status_code)
        if response.status_code < 400:
            return response
        raise self._translate(method, route, what, response, idempotent)

    def _translate(self, method: str, route: str, what: str, response: httpx.Response,
                   idempotent: bool) -> Exception:
        """The civflow error for an error answer, or `_Retry` when another attempt may help."""
        status = response.status_code
        body = self._redact_value(self._body(response))
        where = f"{method} {route}"
        if status == 400:
            errors = body.get("errors") if isinstance(body, Mapping) else None
            if isinstance(errors, Mapping) and errors:
                message = f"the API rejected the {what}: {_errors_summary(errors)}"
            else:
                message = f"the API rejected the {what}: {self._summary(body)}"
            return ApiRejected(self._redact(message), status=400,
                               detail=errors if isinstance(errors, Mapping) else body)
        if status == 401:
            return AuthenticationError(f"{where}: the API refused the key (401 Unauthorized)",
                                       status=401, hint=_KEY_HINT)
        if status == 403:
            text = self._summary(body)
            if re.search(r"fund|buzz", text, re.IGNORECASE):
                return InsufficientFunds(self._redact(f"not enough Buzz for the {what}: {text}"),
                                         status=403, detail=body,
                                         hint="top up Buzz on civitai.com, or run fewer steps")
            return AuthenticationError(self._redact(f"{where}: not permitted (403): {text}"),
                                       status=403, detail=body)
        if status in (404, 410):
            return ApiNotFound(self._redact(f"{what} not found ({status})"), status=status,
                               detail=body)
        if status == 429:
            delay = _retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
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
    def _body(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            return response.text

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
        text = " ".join(text.split())
        return self._redact(text[:300] + ("…" if len(text) > 300 else ""))

    async def _download_once(self, url: httpx.URL, dest: Path) -> Download:
        pool = next(self._next_pool)
        for _ in range(_MAX_REDIRECTS + 1):
            request = pool.build_request("GET", url, headers=self._headers_for(url))
            try:
                async with self._limit or contextlib.nullcontext():
                    response = await pool.send(request, stream=True)
                    try:
                        if response.is_redirect and "Location" in response.headers:
                            self._record("GET", "download", response.status_code)
                            url = url.join(response.headers["Location"])
                            continue
                        self._record("GET", "download", response.status_code)
                        if response.status_code >= 400:
                            await response.aread()
                            raise self._download_error(response)
                        return await self._stream_to(response, dest)
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                self._record("GET", "download", 0)
                raise _Retry(ServiceUnavailable(self._redact(
                    f"download of a blob failed: {type(exc).__name__}"),
                    hint="check the network; the service may be down")) from self._cause(exc)
        raise ServiceUnavailable(f"download: more than {_MAX_REDIRECTS} redirects")

    def _download_error(self, response: httpx.Response) -> Exception:
        status = response.status_code
        if status in (401, 403):
            return AuthenticationError(
                f"the blob URL was refused ({status}): its signature has probably expired",
                status=status,
                hint="refresh the blob (POST /v2/consumer/blobs/{id}/refresh) and retry")
        if status in (404, 410):
            return ApiNotFound(f"the blob is gone ({status})", status=status)
        error = self._translate("GET", "download", "blob", response, True)
        return error

    async def _stream_to(self, response: httpx.Response, dest: Path) -> Download:
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as handle:
                async for chunk in response.aiter_bytes(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            expected = response.headers.get("Content-Length")
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
