"""`civflow emulator`: serve the local Civitai emulator until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8710, show_default=True, type=int, help="Port to listen on.")
@click.option("--time-scale", default=1.0, show_default=True, type=float,
              help="Multiplier of simulated job durations (0 = instant).")
@click.option("--buzz", type=float, default=None,
              help="Starting Buzz balance; over-budget submits answer 403.")
@click.option("--api-key", default=None, help="Require this bearer token (default: any).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Persist workflows and blobs here across restarts.")
@click.option("--url-lifetime", "url_lifetime_seconds", default=3600.0, show_default=True,
              type=float, help="Seconds a signed blob URL stays valid.")
@click.option("--latency-ms", default=0.0, type=float, help="Added latency per request.")
@click.option("--rate-limit", default=0.0, type=float, help="Share of requests answered 429.")
@click.option("--rate-limit-rps", default=None, type=float,
              help="Requests per second allowed before 429 with Retry-After.")
@click.option("--error-rate", default=0.0, type=float, help="Share of requests answered 503.")
@click.option("--drop-rate", default=0.0, type=float,
              help="Share of connections closed without an answer.")
@click.option("--step-failure-rate", default=0.0, type=float, help="Share of steps that fail.")
@click.option("--step-expiry-rate", default=0.0, type=float, help="Share of steps that expire.")
@click.option("--fault-seed", default=0, type=int, help="Seed of the fault dice.")
def emulator(host: str, port: int, time_scale: float, buzz: float | None, api_key: str | None,
             state_dir: Path | None, url_lifetime_seconds: float, latency_ms: float,
             rate_limit: float, rate_limit_rps: float | None, error_rate: float,
             drop_rate: float, step_failure_rate: float, step_expiry_rate: float,
             fault_seed: int) -> None:
    """Serve the local Civitai emulator (v2 consumer API) on HOST:PORT."""
    from civflow.backends.emulator import EmulatorConfig, serve_forever

    config = EmulatorConfig(
        time_scale=time_scale, buzz=buzz, api_key=api_key, state_dir=state_dir,
        url_lifetime_seconds=url_lifetime_seconds, latency_ms=latency_ms,
        rate_limit=rate_limit, rate_limit_rps=rate_limit_rps, error_rate=error_rate,
        drop_rate=drop_rate, step_failure_rate=step_failure_rate,
        step_expiry_rate=step_expiry_rate, fault_seed=fault_seed)
    click.echo(f"civflow emulator listening on http://{host}:{port} "
               f"(time scale {config.time_scale}; Ctrl-C stops)", err=True)
    serve_forever(config, host=host, port=port)
    click.echo("civflow emulator stopped", err=True)
