"""A reusable pytest fixture: a real emulator on loopback at time scale 0.

Use it from any test folder with `from tests.emulator_fixture import emulator  # noqa: F401`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator


@pytest.fixture
def emulator() -> Iterator[RunningEmulator]:
    """A fresh emulator per test; jobs finish as fast as their media renders."""
    with start_emulator(EmulatorConfig(time_scale=0)) as running:
        yield running
