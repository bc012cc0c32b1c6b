"""Serving the emulator with uvicorn: in a background thread for tests, or in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import uvicorn

from civflow.emulator._app import create_app
from civflow.emulator._config import EmulatorConfig
from civflow.errors import CivflowError


class EmulatorError(CivflowError):
    """The emulator could not start, or its admin API refused a request."""


class _Server(uvicorn.Server):
    """uvicorn's server, woken at once by `stop()`. Its own main loop looks at
    `should_exit` every 0.1 s, so each emulator (and each `run --emulator`) took about
    that much longer to stop than it had to."""

    _loop: asyncio.AbstractEventLoop | None = None
    _wake: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        # on_tick refreshes the Date header every tenth call and says when to exit.
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await self._wake.wait()

    def stop(self) -> None:
        """Ask the server to shut down; from any thread."""
        self.should_exit = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # its loop has already closed
                loop.call_soon_threadsafe(wake.set)


class RunningEmulator:
    """An emulator serving on loopback from a background thread; a context manager."""

    def __init__(self, server: _Server, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        # Plain HTTP on loopback: no TLS context (loading the CA bundle costs ~25 ms).
        self._admin = httpx.Client(base_url=url, timeout=30.0, verify=False)

    def __enter__(self) -> RunningEmulator:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._admin.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise EmulatorError(f"emulator admin {method} {path} failed: {exc}") from exc
        if response.status_code >= 400:
            raise EmulatorError(f"emulator admin {method} {path}: {response.text}")
        return response

    def counters(self) -> dict[str, Any]:
        """Requests by route and status, workflows created, externalId hits, Buzz charged."""
        data: dict[str, Any] = self._call("GET", "/_emulator/counters").json()
        return data

    def set_faults(self, **faults: float | None) -> dict[str, Any]:
        """Change fault settings (see EmulatorConfig); returns the settings now in force.

        A new `time_scale` also stretches what is left of the jobs in flight (0: they
        finish at once), not only the jobs submitted after it."""
        data: dict[str, Any] = self._call("PUT", "/_emulator/faults", json=faults).json()
        return data

    def reset(self) -> None:
        """Forget every workflow, blob, count and forgotten AIR; faults stay as set."""
        self._call("POST", "/_emulator/reset")

    def forget_blob(self, blob_id: str) -> None:
        self._call("DELETE", f"/_emulator/blobs/{blob_id}")

    def forget_air(self, air: str) -> None:
        """From now on `air` does not exist (GET /v2/resources answers 404)."""
        self._call("DELETE", f"/_emulator/resources/{quote(air, safe='')}")

    def expire_urls(self) -> None:
        self._call("POST", "/_emulator/expire-urls")

    def close(self) -> None:
        """Stop serving and wait for the thread; safe to call twice."""
        self._admin.close()
        self._server.stop()
        self._thread.join(timeout=30)


def _bind(host: str, port: int) -> socket.socket:
    try:
        sock = socket.create_server((host, port), reuse_port=False)
        # Accepted sockets inherit this. asyncio only sets TCP_NODELAY itself when the
        # socket's proto is IPPROTO_TCP, which create_server's sockets do not report;
        # without it Nagle and delayed ACKs add ~40 ms to every keep-alive request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise EmulatorError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def start_emulator(config: EmulatorConfig | None = None, *, host: str = "127.0.0.1",
                   port: int = 0) -> RunningEmulator:
    """Serve an emulator from a background thread; returns once it accepts connections."""
    sock = _bind(host, port)
    actual = sock.getsockname()[1]
    app = create_app(config or EmulatorConfig())
    server = _Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                    timeout_graceful_shutdown=2))
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=serve, name=f"civflow-emulator-{actual}", daemon=True)
    thread.start()
    while not server.started:
        thread.join(timeout=0.01)
        if not thread.is_alive():
            raise EmulatorError(f"the emulator did not start: {failure[0] if failure else '?'}")
    return RunningEmulator(server, thread, f"http://{host}:{actual}")


def serve_forever(config: EmulatorConfig, *, host: str, port: int) -> None:
    """Serve in the foreground until Ctrl-C (uvicorn handles the signal and shuts down)."""
    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="info",
                                           lifespan="on", timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it already handled by shutting down cleanly
    finally:
        sock.close()
