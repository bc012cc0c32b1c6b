"""Fixtures of the end-to-end tests: a temp project and an emulator that requires a key."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.e2e.support import SECRET, Project, aim
from tests.e2e.support import project as project  # re-exported as a fixture

CONFIG = EmulatorConfig(time_scale=0, api_key=SECRET, announce=False)


@pytest.fixture(scope="module")
def served_for_module() -> Iterator[RunningEmulator]:
    """One real emulator on loopback per test module: starting and stopping uvicorn for
    every test cost a quarter of a second each."""
    with start_emulator(dataclasses.replace(CONFIG)) as running:  # a copy: faults change it
        yield running


@pytest.fixture
def emulator(served_for_module: RunningEmulator,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """A real emulator at time scale 0, requiring SECRET, aimed at by the client as the
    real API: it does not announce itself (tests/stand_in.py), so what runs make there
    is recorded as paid work, in the committed lockfile.

    The module's emulator, as good as new: its faults set back to CONFIG's, then reset
    (no workflow, blob, count or forgotten AIR of an earlier test survives)."""
    served_for_module.set_faults(**CONFIG.faults())
    served_for_module.reset()
    aim(monkeypatch, served_for_module)
    yield served_for_module


@pytest.fixture
def ready(project: Project, emulator: RunningEmulator) -> tuple[Project, RunningEmulator]:
    return project, emulator
