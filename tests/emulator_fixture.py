"""Reusable emulators for tests: a real one on loopback, or its app in-process.

`emulator` (a pytest fixture) serves the emulator with uvicorn at time scale 0: use it
from any test folder with
`from tests.emulator_fixture import emulator, served_emulator  # noqa: F401`.
`in_process` runs the same ASGI app on the test's own event loop behind
`httpx.ASGITransport`: no thread, no socket, for tests of the protocol only (what a
connection does, a drop above all, needs the real server).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.types import ASGIApp, Message

from civflow.emulator import EmulatorConfig, RunningEmulator, create_app, start_emulator


@pytest.fixture(scope="module")
def served_emulator() -> Iterator[RunningEmulator]:
    """One real emulator per test module (uvicorn costs ~0.25 s to start and stop)."""
    with start_emulator(EmulatorConfig(time_scale=0)) as running:
        yield running


@pytest.fixture
def emulator(served_emulator: RunningEmulator) -> RunningEmulator:
    """An emulator as good as new for each test: the module's, its faults set back to
    time scale 0 and nothing else, then reset (no workflow, blob, count or forgotten
    AIR survives). Jobs finish as fast as their media renders."""
    served_emulator.set_faults(**EmulatorConfig(time_scale=0).faults())
    served_emulator.reset()
    return served_emulator


class InProcessEmulator:
    """The emulator's app behind an ASGI transport, with the admin API of
    `RunningEmulator` as coroutines (through the same admin routes)."""

    url = "http://emulator.test"

    def __init__(self, transport: httpx.ASGITransport) -> None:
        self.transport = transport
        self._admin = httpx.AsyncClient(transport=transport, base_url=self.url)

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self._admin.request(method, path, **kwargs)
        assert response.status_code < 400, f"admin {method} {path}: {response.text}"
        return response

    async def counters(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self._call("GET", "/_emulator/counters")).json()
        return data

    async def set_faults(self, **faults: float | None) -> dict[str, Any]:
        data: dict[str, Any] = (await self._call("PUT", "/_emulator/faults",
                                                 json=faults)).json()
        return data

    async def reset(self) -> None:
        await self._call("POST", "/_emulator/reset")

    async def forget_air(self, air: str) -> None:
        await self._call("DELETE", f"/_emulator/resources/{quote(air, safe='')}")

    async def expire_urls(self) -> None:
        await self._call("POST", "/_emulator/expire-urls")


@contextlib.asynccontextmanager
async def in_process(config: EmulatorConfig | None = None) -> AsyncIterator[InProcessEmulator]:
    """The emulator's app, started (its lifespan run) on the running loop."""
    app = create_app(config or EmulatorConfig(time_scale=0))
    async with _lifespan(app):
        emulator = InProcessEmulator(httpx.ASGITransport(app=app))
        try:
            yield emulator
        finally:
            await emulator._admin.aclose()


@contextlib.asynccontextmanager
async def _lifespan(app: ASGIApp) -> AsyncIterator[None]:
    """Drive the ASGI lifespan protocol as a server would (httpx's transport does not)."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def send(message: Message) -> None:
        await outbox.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, inbox.get, send))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        stopped = await outbox.get()
        await task
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
