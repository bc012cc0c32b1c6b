"""Fixtures of the end-to-end tests: a temp project and an emulator that requires a key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.e2e.support import SECRET, Project, aim
from tests.e2e.support import project as project  # re-exported as a fixture


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """A real emulator on loopback at time scale 0, requiring SECRET, aimed at by the client
    as the real API: it does not announce itself (tests/stand_in.py), so what runs make
    there is recorded as paid work, in the committed lockfile."""
    with start_emulator(EmulatorConfig(time_scale=0, api_key=SECRET,
                                       announce=False)) as running:
        aim(monkeypatch, running)
        yield running


@pytest.fixture
def ready(project: Project, emulator: RunningEmulator) -> tuple[Project, RunningEmulator]:
    return project, emulator
