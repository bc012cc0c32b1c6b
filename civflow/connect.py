"""Open the backend a run talks to: the real API, or an emulator in this process."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from civflow.client.civitai import CivitaiClient
from civflow.errors import MissingExtra
from civflow.origin import Origin

# Emulated jobs take this share of their modelled duration: a demo in seconds.
EMULATOR_TIME_SCALE = 0.05


def emulator_time_scale() -> float:
    """CIVFLOW_EMULATOR_TIME_SCALE, read when an emulator starts (tests set it to 0)."""
    try:
        value = float(os.environ.get("CIVFLOW_EMULATOR_TIME_SCALE", EMULATOR_TIME_SCALE))
    except ValueError:
        return EMULATOR_TIME_SCALE
    return value if 0 <= value < 1e6 else EMULATOR_TIME_SCALE


def wants_emulator(flag: bool) -> bool:
    return flag or os.environ.get("CIVFLOW_BACKEND", "").lower() == "emulator"


@asynccontextmanager
async def open_backend(emulator: bool, api_key_file: Path | None = None, *,
                       concurrency: int | None = None) -> AsyncIterator[CivitaiClient]:
    """A client for the real API (key from the environment or a file), or for an
    emulator started in this process for the duration of the block."""
    # Every workflow in flight holds one long-poll; leave room for downloads and lookups.
    limit = concurrency + 16 if concurrency else None
    if not emulator:
        client = CivitaiClient.from_env(api_key_file=api_key_file, concurrency_limit=limit)
        try:
            yield client
        finally:
            await client.aclose()
        return
    try:
        from civflow.emulator import EmulatorConfig, start_emulator
    except ImportError as exc:
        raise MissingExtra.check(exc, feature="the emulator", extra="emulator") from None

    # A random key, long enough for the client to accept (it blanks its key from every
    # text it shows).
    key = secrets.token_urlsafe(24)
    running = await asyncio.to_thread(start_emulator,
                                      EmulatorConfig(time_scale=emulator_time_scale(), api_key=key))
    client = CivitaiClient(running.url, key, concurrency_limit=limit, origin=Origin.EMULATOR)
    try:
        yield client
    finally:
        await client.aclose()
        await asyncio.to_thread(running.close)
