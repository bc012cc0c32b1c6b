"""Which API made a result: the real Civitai API, or civflow's emulator.

Every lockfile entry records it (`madeBy`). A run against one never takes the other's
results as its own: an emulator's picture is a preview, never paid work, and the
emulator in turn makes its own pictures rather than reusing paid ones. The emulator
says what it is in every answer (`EMULATOR_HEADER`), so a served emulator on any port
is known as one without configuration.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["EMULATOR_HEADER", "Origin"]

# Sent by the emulator with every answer; the real API never sends it.
EMULATOR_HEADER = "X-Civflow-Emulator"


class Origin(StrEnum):
    CIVITAI = "civitai"
    EMULATOR = "emulator"

    @property
    def made_on(self) -> str:
        """How a plan names results of this origin: "made on the emulator"."""
        return "made on Civitai" if self is Origin.CIVITAI else "made on the emulator"

    @classmethod
    def of_entry(cls, recorded: str | None) -> Origin:
        """The origin a lock entry records; an entry written before civflow recorded
        provenance (no `madeBy`) is read as made by Civitai, as it always was."""
        return cls(recorded) if recorded else cls.CIVITAI
