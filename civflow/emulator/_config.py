"""Configuration of one emulator instance: clock speed, money, auth, storage and faults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Fields that PUT /_emulator/faults and RunningEmulator.set_faults may change at run time
# (a new time_scale applies to the jobs in flight too: Engine.set_faults).
FAULT_FIELDS = (
    "latency_ms",
    "rate_limit",
    "rate_limit_rps",
    "error_rate",
    "drop_rate",
    "step_failure_rate",
    "step_expiry_rate",
    "url_lifetime_seconds",
    "time_scale",
)


@dataclass
class EmulatorConfig:
    """How an emulator behaves; the fault fields may be changed later through the admin API.

    `rate_limit` is the share of requests answered 429; `rate_limit_rps` (when set) is a
    token-bucket limit in requests per second, answered 429 with `Retry-After` beyond it.
    """

    time_scale: float = 1.0
    api_key: str | None = None
    buzz: float | None = None
    url_lifetime_seconds: float = 3600
    state_dir: Path | None = None
    fault_seed: int = 0
    latency_ms: float = 0.0
    rate_limit: float = 0.0
    rate_limit_rps: float | None = None
    error_rate: float = 0.0
    drop_rate: float = 0.0
    step_failure_rate: float = 0.0
    step_expiry_rate: float = 0.0
    # AIRs answered 404; with known_airs_only, every AIR but the few named ones is.
    missing_airs: tuple[str, ...] = ()
    known_airs_only: bool = False
    # Words that make an image step's prompt fail moderation: the step fails, its
    # output holds blobs with a `blockedReason` and `errors`; its workflow's other
    # steps run on (what takes its output is canceled).
    blocked_words: tuple[str, ...] = ()
    # Bytes that uploads may carry; the website's limit.
    max_upload_bytes: int = 64 * 1024 * 1024
    # Every answer says "I am the emulator" (`civflow.origin.EMULATOR_HEADER`), so what it
    # makes is recorded as a preview, never as paid work. Only a test standing in for
    # the real API turns this off (from Python; no command or variable can).
    announce: bool = True

    def faults(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FAULT_FIELDS}


def apply_faults(config: EmulatorConfig, changes: dict[str, Any]) -> list[str]:
    """Set fault fields from a JSON-ish mapping; returns error messages for bad entries."""
    problems: list[str] = []
    known = {f.name: f for f in dataclasses.fields(config)}
    for name, value in changes.items():
        if name not in FAULT_FIELDS:
            problems.append(f"unknown fault {name!r}; known: {', '.join(FAULT_FIELDS)}")
            continue
        if value is None and name == "rate_limit_rps":
            config.rate_limit_rps = None
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{name} must be a number")
            continue
        if value < 0:
            problems.append(f"{name} must not be negative")
            continue
        if (name.endswith("_rate") or name == "rate_limit") and value > 1:
            problems.append(f"{name} is a share between 0 and 1")
            continue
        assert name in known
        setattr(config, name, float(value))
    return problems
