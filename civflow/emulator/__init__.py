"""A local, faithful emulator of the Civitai orchestration API (v2 consumer workflows).

It is a real HTTP server (Starlette under uvicorn) with simulated time, deterministic
media, `$ref` chaining, Buzz pricing from the catalog, signed blob URLs, and faults on
purpose; tests and `civflow run --emulator` use `start_emulator`, people use
`civflow emulator`.
"""

from civflow.emulator._app import create_app
from civflow.emulator._config import FAULT_FIELDS, EmulatorConfig
from civflow.emulator._resources import known_airs
from civflow.emulator._server import (
    EmulatorError,
    RunningEmulator,
    serve_forever,
    start_emulator,
)

__all__ = [
    "FAULT_FIELDS",
    "EmulatorConfig",
    "EmulatorError",
    "RunningEmulator",
    "create_app",
    "known_airs",
    "serve_forever",
    "start_emulator",
]
