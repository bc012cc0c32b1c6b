"""A small hostile HTTP/1.1 server on 127.0.0.1: the broken or malicious API civflow must survive.

Raw asyncio sockets rather than an ASGI app, so that it can do what a framework
would not: trickle a head or a body one byte at a time, stream a body that never
ends, promise a length it does not keep. One request per connection (every answer
says `Connection: close`). Each route answers from a script, a list of actions
consumed one per request whose last one repeats:

    Reply(status, body, headers)   a whole answer; a body that is not bytes/str is JSON
    Trickle(...)                   one byte every `every` seconds, in the head or the body
    Endless(...)                   a body streamed as fast as the client reads, never ending

It runs its own event loop in a daemon thread; `serve_hostile()` starts and stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

_REASONS = {200: "OK", 202: "Accepted", 301: "Moved Permanently", 302: "Found",
            307: "Temporary Redirect", 308: "Permanent Redirect", 403: "Forbidden",
            404: "Not Found", 500: "Internal Server Error"}


@dataclass
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...
    async def drain(self) -> None: ...
    def is_closing(self) -> bool: ...


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    lines += [f"{k}: {v}" for k, v in {**headers, "Connection": "close"}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Reply:
    """A whole answer at once."""

    status: int
    body: Any = b""
    headers: dict[str, str] = field(default_factory=dict)

    async def play(self, writer: _Writer, server: HostileServer) -> None:
        if isinstance(self.body, bytes):
            data, kind = self.body, "application/json"
        elif isinstance(self.body, str):
            data, kind = self.body.encode(), "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(self.body).encode(), "application/json"
        headers = {"Content-Type": kind, "Content-Length": str(len(data)), **self.headers}
        writer.write(_head(self.status, headers) + data)
        await writer.drain()
        server.record_sent(len(data))


@dataclass
class Trickle:
    """`byte` every `every` seconds for at most `limit` seconds: in the body after a
    prompt head, or (`in_head`) already in the head, before the status line ends."""

    byte: bytes = b" "
    every: float = 0.05
    in_head: bool = False
    content_type: str = "application/json"
    limit: float = 60.0

    async def play(self, writer: _Writer, server: HostileServer) -> None:
        if not self.in_head:
            writer.write(_head(200, {"Content-Type": self.content_type}))
            await writer.drain()
        else:
            writer.write(b"HTTP/1.1 200")
        sent = 0
        for _ in range(int(self.limit / self.every)):
            if writer.is_closing():
                break
            writer.write(self.byte)
            await writer.drain()
            sent += len(self.byte)
            await asyncio.sleep(self.every)
        server.record_sent(sent)


@dataclass
class Endless:
    """`prefix`, then `chunk` again and again until the client hangs up (or `limit`
    bytes, a safety net); `content_length` is declared when given, kept or not."""

    chunk: bytes = b"0," * 32768
    prefix: bytes = b"["
    content_type: str = "application/json"
    content_length: int | None = None
    limit: int = 2 * 1024**3

    async def play(self, writer: _Writer, server: HostileServer) -> None:
        headers = {"Content-Type": self.content_type}
        if self.content_length is not None:
            headers["Content-Length"] = str(self.content_length)
        writer.write(_head(200, headers) + self.prefix)
        sent = len(self.prefix)
        try:
            while sent < self.limit and not writer.is_closing():
                writer.write(self.chunk)
                await writer.drain()
                sent += len(self.chunk)
        finally:
            server.record_sent(sent)


Action = Reply | Trickle | Endless


@dataclass
class HostileServer:
    """The scripted server; `url` is set once it listens, `sent` holds the body bytes
    written for each answer (how much a client made it send before hanging up)."""

    scripts: dict[str, list[Action]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    url: str = ""
    _answered: threading.Condition = field(default_factory=threading.Condition)

    def record_sent(self, count: int) -> None:
        with self._answered:
            self.sent.append(count)
            self._answered.notify_all()

    def wait_sent(self, answers: int = 1, timeout: float = 30.0) -> list[int]:
        """`sent` once `answers` answers have ended on the server's side: the client may
        hang up before the server's own thread has noticed (bounded by `timeout`)."""
        with self._answered:
            self._answered.wait_for(lambda: len(self.sent) >= answers, timeout)
            return list(self.sent)

    def script(self, route: str, *actions: Action) -> None:
        """`route` is "METHOD /path" (no query); the last action repeats forever."""
        self.scripts[route] = list(actions)

    def hits(self, route: str) -> int:
        method, path = route.split(" ", 1)
        return sum(1 for s in self.seen if s.method == method and s.path == path)

    def _next(self, route: str) -> Action:
        actions = self.scripts.get(route)
        if not actions:
            return Reply(404, {"title": "Not Found", "status": 404})
        return actions.pop(0) if len(actions) > 1 else actions[0]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {k.strip().lower(): v.strip()
                       for k, v in (line.split(":", 1) for line in lines if ":" in line)}
            length = int(headers.get("content-length") or 0)
            body = await reader.readexactly(length) if length else b""
            path, _, query = target.partition("?")
            self.seen.append(Seen(method, path, query, headers, body))
            await self._next(f"{method} {path}").play(writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client hung up: exactly what a hostile answer is meant to provoke
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.contextmanager
def serve_hostile(tls: ssl.SSLContext | None = None) -> Iterator[HostileServer]:
    """A running `HostileServer` for the duration of the block (https with `tls`)."""
    server = HostileServer()
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    listening: list[asyncio.Server] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        listener = loop.run_until_complete(
            asyncio.start_server(server._handle, "127.0.0.1", 0, ssl=tls))
        listening.append(listener)
        scheme = "https" if tls is not None else "http"
        server.url = f"{scheme}://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        ready.set()
        loop.run_forever()
        listener.close()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(listener.wait_closed())
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the hostile server did not start")
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
