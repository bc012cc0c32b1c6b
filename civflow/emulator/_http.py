"""HTTP plumbing shared by the routes: problems, auth, query parsing, fault middleware."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from civflow.emulator._engine import Engine
from civflow.origin import EMULATOR_HEADER

_TYPES = {
    400: "https://tools.ietf.org/html/rfc9110#section-15.5.1",
    401: "https://tools.ietf.org/html/rfc9110#section-15.5.2",
    403: "https://tools.ietf.org/html/rfc9110#section-15.5.4",
    404: "https://tools.ietf.org/html/rfc9110#section-15.5.5",
    413: "https://tools.ietf.org/html/rfc9110#section-15.5.14",
    415: "https://tools.ietf.org/html/rfc9110#section-15.5.16",
    422: "https://tools.ietf.org/html/rfc9110#section-15.5.21",
    429: "https://tools.ietf.org/html/rfc6585#section-4",
    503: "https://tools.ietf.org/html/rfc9110#section-15.6.4",
}
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           413: "Content Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Content", 429: "Too Many Requests",
           503: "Service Unavailable"}


class BadQuery(Exception):
    """A query parameter that does not parse; becomes a 400 with an errors map."""

    def __init__(self, name: str, value: str) -> None:
        super().__init__(name)
        self.errors = {name: [f"The value '{value}' is not valid for {name}."]}


def problem(status: int, detail: str | None = None, *,
            headers: dict[str, str] | None = None) -> JSONResponse:
    """An RFC 7807 ProblemDetails response, as ASP.NET writes it."""
    body: dict[str, Any] = {"type": _TYPES.get(status), "title": _TITLES.get(status),
                            "status": status}
    if detail:
        body["detail"] = detail
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


def validation_problem(errors: dict[str, list[str]]) -> JSONResponse:
    body = {"type": _TYPES[400], "title": "One or more validation errors occurred.",
            "status": 400, "errors": errors}
    return JSONResponse(body, 400, media_type="application/problem+json")


def bearer_ok(request: Request, engine: Engine) -> bool:
    """Any non-empty token, unless the emulator was given a key to require."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    required = engine.config.api_key
    return required is None or token.strip() == required


def base_url(request: Request) -> str:
    """Where the client reached us; blob URLs are built on it."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadQuery(name, raw) from None


def bool_param(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise BadQuery(name, raw)


_ANNOUNCE = (EMULATOR_HEADER.lower().encode(), b"1")


def _announcing(send: Send) -> Send:
    """`send` with the emulator's header on every answer: a client anywhere knows that
    what it gets is a preview (civflow.origin)."""
    async def stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), _ANNOUNCE]}
        await send(message)
    return stamped


class _Bucket:
    """A token bucket for the requests-per-second rate limit."""

    def __init__(self) -> None:
        self.tokens = 0.0
        self.stamp = 0.0
        self.rate = 0.0

    def take(self, rate: float) -> float:
        """0 when a request may pass, else the seconds until one may."""
        now = time.monotonic()
        if rate != self.rate:
            self.rate, self.tokens, self.stamp = rate, max(rate, 1.0), now
        self.tokens = min(max(rate, 1.0), self.tokens + (now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


class FaultsAndCounters:
    """Counts every request by route template and status; injects faults outside admin."""

    def __init__(self, app: ASGIApp, engine: Engine, routes: Callable[[], Sequence[BaseRoute]]):
        self.app = app
        self.engine = engine
        self.routes = routes
        self.bucket = _Bucket()

    def _template(self, scope: Scope) -> str:
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return f"{scope['method']} {getattr(route, 'path', '?')}"
        return f"{scope['method']} (unmatched)"

    def _count(self, template: str, status: int | str) -> None:
        by_status = self.engine.counters.requests.setdefault(template, {})
        by_status[str(status)] = by_status.get(str(status), 0) + 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.engine.config.announce:
            send = _announcing(send)
        template = self._template(scope)
        if not scope["path"].startswith("/_emulator/"):
            early = await self._fault(receive)
            if early == "dropped":
                self._count(template, "dropped")
                return
            if isinstance(early, Response):
                self._count(template, early.status_code)
                await early(scope, receive, send)
                return
        status: list[int] = []

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)
        self._count(template, status[0] if status else "none")

    async def _fault(self, receive: Receive) -> Response | Literal["dropped"] | None:
        config, rng = self.engine.config, self.engine.rng
        if config.latency_ms > 0:
            await asyncio.sleep(config.latency_ms / 1000)
        if config.drop_rate and rng.random() < config.drop_rate:
            if await _abort(receive):
                return "dropped"
            return problem(503, "The connection was dropped (emulated).")
        if config.rate_limit_rps:
            wait = self.bucket.take(config.rate_limit_rps)
            if wait > 0:
                return problem(429, "Rate limit exceeded (emulated).",
                               headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if config.rate_limit and rng.random() < config.rate_limit:
            return problem(429, "Rate limit exceeded (emulated).", headers={"Retry-After": "1"})
        if config.error_rate and rng.random() < config.error_rate:
            return problem(503, "The service is temporarily unavailable (emulated).")
        return None


async def _abort(receive: Receive) -> bool:
    """Close the client's connection without an answer (uvicorn only); False if impossible.

    ASGI has no "drop" message, so this reaches uvicorn's request cycle through the
    bound `receive` method and aborts its transport, which is what a client sees when a
    proxy or server dies mid-request.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return False
    transport.abort()
    # Let uvicorn notice the disconnect so it does not try to answer with a 500.
    for _ in range(3):
        await asyncio.sleep(0)
    return True
