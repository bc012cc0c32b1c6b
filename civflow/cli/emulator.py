"""`civflow emulator`: serve the local Civitai emulator until Ctrl-C."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click


class _Finite(click.FloatRange):
    """A FloatRange that also refuses nan and infinity (nan passes any range check)."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


_SHARE = _Finite(0.0, 1.0)
_NON_NEGATIVE = _Finite(min=0.0)
_POSITIVE = _Finite(min=0.0, min_open=True)


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8710, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--time-scale", default=1.0, show_default=True, type=_NON_NEGATIVE,
              help="Multiplier of simulated job durations (0 = instant).")
@click.option("--buzz", type=_NON_NEGATIVE, default=None,
              help="Starting Buzz balance; over-budget submits answer 403.")
@click.option("--api-key", default=None, help="Require this bearer token (default: any).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Persist workflows and blobs here across restarts.")
@click.option("--url-lifetime", "url_lifetime_seconds", default=3600.0, show_default=True,
              type=_POSITIVE, help="Seconds a signed blob URL stays valid.")
@click.option("--latency-ms", default=0.0, type=_Finite(0.0, 60_000.0),
              help="Added latency per request (at most a minute).")
@click.option("--rate-limit", default=0.0, type=_SHARE, help="Share of requests answered 429.")
@click.option("--rate-limit-rps", default=None, type=_POSITIVE,
              help="Requests per second allowed before 429 with Retry-After.")
@click.option("--error-rate", default=0.0, type=_SHARE, help="Share of requests answered 503.")
@click.option("--drop-rate", default=0.0, type=_SHARE,
              help="Share of connections closed without an answer.")
@click.option("--step-failure-rate", default=0.0, type=_SHARE, help="Share of steps that fail.")
@click.option("--step-expiry-rate", default=0.0, type=_SHARE, help="Share of steps that expire.")
@click.option("--fault-seed", default=0, type=click.IntRange(0, 2**64 - 1),
              help="Seed of the fault dice.")
@click.option("--missing-air", "missing_airs", multiple=True, metavar="AIR",
              help="Answer 404 for this AIR (any other well-formed AIR exists).")
@click.option("--known-airs-only", is_flag=True,
              help="Only the emulator's few named models and LoRAs exist.")
def emulator(host: str, port: int, time_scale: float, buzz: float | None, api_key: str | None,
             state_dir: Path | None, url_lifetime_seconds: float, latency_ms: float,
             rate_limit: float, rate_limit_rps: float | None, error_rate: float,
             drop_rate: float, step_failure_rate: float, step_expiry_rate: float,
             fault_seed: int, missing_airs: tuple[str, ...], known_airs_only: bool) -> None:
    """Serve the local Civitai emulator (v2 consumer API) on HOST:PORT."""
    from civflow.errors import MissingExtra

    try:
        from civflow.emulator import EmulatorConfig, serve_forever
    except ImportError as exc:
        raise MissingExtra.check(exc, feature="the emulator", extra="emulator") from None

    config = EmulatorConfig(
        time_scale=time_scale, buzz=buzz, api_key=api_key, state_dir=state_dir,
        url_lifetime_seconds=url_lifetime_seconds, latency_ms=latency_ms,
        rate_limit=rate_limit, rate_limit_rps=rate_limit_rps, error_rate=error_rate,
        drop_rate=drop_rate, step_failure_rate=step_failure_rate,
        step_expiry_rate=step_expiry_rate, fault_seed=fault_seed,
        missing_airs=missing_airs, known_airs_only=known_airs_only)
    click.echo(f"civflow emulator listening on http://{host}:{port} "
               f"(time scale {config.time_scale}; Ctrl-C stops)", err=True)
    try:
        serve_forever(config, host=host, port=port)
    except OSError as exc:  # address in use, unknown host, no permission for a low port
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    click.echo("civflow emulator stopped", err=True)
