"""CivitaiClient against the emulator: every operation, faults, idempotency, errors.

The happy path and the faults (dropped connections above all) go over real HTTP to
a served emulator; the other protocol cases talk to the emulator's app in-process
(`httpx.ASGITransport` through the client's `transport` seam), without sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from civflow.client.base import WorkflowState
from civflow.client.civitai import CivitaiClient
from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.errors import (
    ApiNotFound,
    ApiRejected,
    AuthenticationError,
    CivflowError,
    InsufficientFunds,
)
from tests.emulator_fixture import InProcessEmulator, in_process

KEY = "emulator-key-XYZ-987654321"
WORKFLOWS = "POST /v2/consumer/workflows"
T = TypeVar("T")


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with start_emulator(EmulatorConfig(time_scale=0, api_key=KEY, fault_seed=7)) as running:
        yield running


def _run(emu: RunningEmulator, use: Callable[[CivitaiClient], Awaitable[T]], *,
         key: str = KEY, seen: list[tuple[str, str, int]] | None = None,
         **options: Any) -> T:
    async def main() -> T:
        options.setdefault("backoff_base", 0.001)
        options.setdefault("backoff_cap", 0.005)
        options.setdefault("rng", random.Random(20241125))  # seeded retry jitter
        record = (lambda m, r, s: seen.append((m, r, s))) if seen is not None else None
        async with CivitaiClient(emu.url, key, on_request=record, **options) as client:
            return await use(client)
    return asyncio.run(main())


def _offline(use: Callable[[InProcessEmulator], Awaitable[T]], **config: Any) -> T:
    """`use` run against the emulator's app in-process, on one event loop."""
    async def main() -> T:
        async with in_process(EmulatorConfig(time_scale=0, api_key=KEY, fault_seed=7,
                                             **config)) as emu:
            return await use(emu)
    return asyncio.run(main())


def _client(emu: InProcessEmulator, *, key: str = KEY, **options: Any) -> CivitaiClient:
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_cap", 0.005)
    options.setdefault("rng", random.Random(20241125))  # seeded retry jitter
    return CivitaiClient(emu.url, key, transport=emu.transport, **options)


def _image(prompt: str, key: str | None, *, tags: list[str] | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {
        "steps": [{"$type": "imageGen", "input": {
            "engine": "sdcpp", "ecosystem": "sdxl", "operation": "createImage",
            "model": "urn:air:sdxl:checkpoint:civitai:101055@128078", "prompt": prompt,
            "width": 256, "height": 256, "quantity": 1, "seed": 1}}],
        "tags": tags or ["civflow"], "currencies": []}
    if key:
        template["externalId"] = key
    return template


async def _finish(client: CivitaiClient, state: WorkflowState) -> WorkflowState:
    while not state.is_terminal:
        assert state.id is not None
        state = await client.get(state.id, wait=5)
    return state


def test_submit_get_download_refresh(emu: RunningEmulator, tmp_path: Path) -> None:
    seen: list[tuple[str, str, int]] = []

    async def use(client: CivitaiClient) -> tuple[Any, ...]:
        state = await _finish(client, await client.submit(_image("a fox", "cf-a-1"), wait=5))
        image = state.steps[0].output["images"][0]  # type: ignore[index]
        got = await client.download(image["url"], tmp_path / "a.part")
        fresh = await client.refresh_blob(image["id"])
        again = await client.get(str(state.id))
        return state, image, got, fresh, again

    state, image, got, fresh, again = _run(emu, use, seen=seen)
    assert state.status == "succeeded" and state.cost > 0 and state.external_id == "cf-a-1"
    assert state.steps[0].type == "imageGen" and state.steps[0].name == "$0"
    assert got.sha256 == hashlib.sha256((tmp_path / "a.part").read_bytes()).hexdigest()
    assert got.media_type == "image/jpeg" and got.size == (tmp_path / "a.part").stat().st_size
    assert ("GET", "download", 308) in seen and ("GET", "download", 200) in seen
    assert fresh["id"] == image["id"] and fresh["url"]
    assert again.id == state.id and again.is_terminal


def test_expired_url_then_refresh(tmp_path: Path) -> None:
    async def use(emu: InProcessEmulator) -> str:
        async with _client(emu) as client:
            state = await _finish(client, await client.submit(_image("a cat", "cf-b-1"), wait=5))
            image = state.steps[0].output["images"][0]  # type: ignore[index]
            await emu.expire_urls()
            with pytest.raises(AuthenticationError) as info:
                await client.download(image["url"], tmp_path / "x.part")
            assert info.value.status == 403
            assert list(tmp_path.iterdir()) == []
            fresh = await client.refresh_blob(image["id"])
            return (await client.download(fresh["url"], tmp_path / "x.part")).sha256
    assert _offline(use) == hashlib.sha256((tmp_path / "x.part").read_bytes()).hexdigest()


def test_query_cancel_delete() -> None:
    async def use(emu: InProcessEmulator) -> None:
        await emu.set_faults(time_scale=1000)  # slow enough that the workflow is still running
        async with _client(emu) as client:
            running = await client.submit(_image("slow", "cf-c-1", tags=["civflow", "q1"]))
            listed, cursor = await client.query(tags=["q1"])
            await client.cancel(str(running.id))
            canceled = await client.get(str(running.id))
            await client.delete(str(running.id))
            with pytest.raises(ApiNotFound) as gone:
                await client.get(str(running.id))
        assert not running.is_terminal
        assert [w.id for w in listed] == [running.id] and cursor is None
        assert canceled.status == "canceled"
        assert gone.value.status == 404
    _offline(use)


def test_upload_and_resource(tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "in.png"
    Image.new("RGB", (8, 8), "red").save(png)

    async def use(emu: InProcessEmulator) -> None:
        async with _client(emu) as client:
            blob = await client.upload_blob(png, "image/png")
            resource = await client.resource("urn:air:sdxl:lora:civitai:200000@250000")
            await emu.forget_air("urn:air:sdxl:lora:civitai:1@1")
            with pytest.raises(ApiNotFound):
                await client.resource("urn:air:sdxl:lora:civitai:1@1")
        assert blob["id"] and blob["url"]
        assert resource["air"] == "urn:air:sdxl:lora:civitai:200000@250000"
    _offline(use)


def test_faults_are_survived_and_external_ids_prevent_duplicates(emu: RunningEmulator) -> None:
    emu.set_faults(drop_rate=0.3, error_rate=0.2, rate_limit=0.2)

    async def use(client: CivitaiClient) -> list[WorkflowState]:
        done = []
        for n in range(8):
            state = await client.submit(_image(f"fox {n}", f"cf-f-{n}"), wait=2)
            done.append(await _finish(client, state))
        # The same key again: the API hands back the workflow it already has.
        done.append(await client.submit(_image("fox 0", "cf-f-0")))
        return done

    states = _run(emu, use, max_attempts=15)
    emu.set_faults(drop_rate=0, error_rate=0, rate_limit=0)
    assert all(s.status == "succeeded" for s in states)
    assert states[-1].id == states[0].id
    counters = emu.counters()
    assert counters["workflows_created"] == 8
    assert set(counters["creations_by_external_id"].values()) == {1}
    statuses = counters["requests"][WORKFLOWS]
    assert statuses.get("dropped", 0) + statuses.get("503", 0) + statuses.get("429", 0) > 0


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(status: int) -> None:
    kinds: dict[int, tuple[type[CivflowError], Callable[[CivitaiClient], Awaitable[Any]],
                           str, str]] = {
        400: (ApiRejected, lambda c: c.submit({"steps": [{"$type": "noSuchType", "input": {}}],
                                              "externalId": "cf-e-1"}),
              WORKFLOWS, "steps[0]"),
        401: (AuthenticationError, lambda c: c.submit(_image("x", "cf-e-2")), WORKFLOWS, "401"),
        404: (ApiNotFound, lambda c: c.get("0-does-not-exist"),
              "GET /v2/consumer/workflows/{workflow_id}", "not found"),
    }
    kind, call, route, words = kinds[status]

    async def use(emu: InProcessEmulator) -> None:
        async with _client(emu, key=KEY if status != 401 else "a-wrong-key-0123456789") as c:
            with pytest.raises(kind) as info:
                await call(c)
        assert words in str(info.value)
        assert "a-wrong-key-0123456789" not in str(info.value) and KEY not in str(info.value)
        assert (await emu.counters())["requests"][route] == {str(status): 1}
        if status == 400:
            assert isinstance(info.value, ApiRejected)
            assert isinstance(info.value.detail, dict) and info.value.detail
    _offline(use)


def test_insufficient_buzz() -> None:
    async def use(emu: InProcessEmulator) -> None:
        async with _client(emu) as client:
            with pytest.raises(InsufficientFunds) as info:
                await client.submit(_image("pricey", "cf-p-1"))
        assert info.value.status == 403
    _offline(use, buzz=0.5)
