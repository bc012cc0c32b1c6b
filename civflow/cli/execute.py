"""`civflow run`, `status` and `cancel`: the commands that spend (or stop spending) Buzz."""

from __future__ import annotations

import asyncio
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from civflow.cli.check import _check_step_names, _options, load_checked
from civflow.errors import SpendingRefused, StepsFailed, UsageError
from civflow.loading.discover import pipeline_files


def _command_line(file: Path, extra: Sequence[str] = ()) -> str:
    return shlex.join(["civflow", *extra, str(file)])


def _cap(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None and (not math.isfinite(value) or value < 0):
        raise click.BadParameter("a cap is a finite number of Buzz, 0 or more")
    return value


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--only", multiple=True, metavar="GLOB",
              help="Only these steps or instances (and what they need); globs such as "
                   "'upscale[*]' or 'shot[*seed=1]'.")
@click.option("--force", multiple=True, metavar="STEP", is_flag=False, flag_value="*",
              help="Re-run STEP and its dependents even if cached (alone: everything).")
@click.option("--reroll", multiple=True, metavar="STEP",
              help="New seeds for STEP (a salt recorded in the lockfile).")
@click.option("--retry-failed", is_flag=True,
              help="Submit failed instances again (never those blocked by moderation).")
@click.option("--concurrency", type=click.IntRange(1, 10_000), default=8, show_default=True,
              help="Workflows in flight at once.")
@click.option("--batch", type=click.IntRange(1, 100), metavar="N",
              help="Up to N steps per workflow (overrides the pipeline's `batch`; 1: one "
                   "workflow per instance).")
@click.option("--max-cost", type=float, callback=_cap, metavar="BUZZ",
              help="A hard cap: refuse a plan estimated over BUZZ, and never let what was "
                   "charged plus what is in flight pass it.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before spending.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="Where outputs are written (default: out/ next to .civflow/).")
@click.option("--fail-fast", is_flag=True, help="Stop starting new work after a failure.")
@click.option("--update-lockfile", is_flag=True,
              help="With --var/--vars-file: record the results in the committed lockfile "
                   "(by default one-off values get a lockfile of their own under .civflow/).")
@click.option("--keep-stale", is_flag=True,
              help="Keep lockfile entries of instances the pipeline no longer has.")
@click.option("--wait", "wait_lock", is_flag=True,
              help="If another run of this pipeline is in progress, wait for it to end.")
@click.option("--push", is_flag=True,
              help="Afterwards, push what the run's instances name to the project's "
                   "remote (as `push = true` in civflow.toml does).")
@click.option("--emulator", is_flag=True,
              help="Run against an emulator started in this process (no key, no network).")
@click.option("--api-key-file", type=click.Path(path_type=Path, dir_okay=False),
              help="Read the API key from this file instead of CIVITAI_API_KEY.")
@click.option("--verbose", "-v", is_flag=True,
              help="A line for every cached instance too (by default they are one line).")
@_options
def run(file: Path, only: tuple[str, ...], force: tuple[str, ...], reroll: tuple[str, ...],
        retry_failed: bool, concurrency: int, batch: int | None, max_cost: float | None,
        yes: bool,
        out_dir: Path | None, fail_fast: bool, update_lockfile: bool, keep_stale: bool,
        wait_lock: bool, push: bool,
        emulator: bool,
        api_key_file: Path | None, verbose: bool, vars_: tuple[str, ...],
        vars_files: tuple[Path, ...], strict: bool) -> None:
    """Execute a pipeline."""
    from civflow import arun
    from civflow.cli import report, started
    from civflow.cli.progress import reporter_for
    from civflow.cli.remote import push_after_run, push_target
    from civflow.connect import wants_emulator
    from civflow.planning import Plan
    from civflow.runner import Estimate, Event, Phase

    checked = load_checked(file, vars_, vars_files, strict=strict)
    started()
    if batch is not None:
        from dataclasses import replace
        checked = replace(checked, spec=replace(checked.spec, batch_override=batch))
    _check_step_names(checked, [f for f in force if f != "*"] + list(reroll), allow_star=False)
    for warning in checked.warnings:
        click.echo(warning.render(), err=True)
    push_root = push_target(file, push)

    async def confirm(plan: Plan, cost: Estimate) -> bool:
        reporter.flush()
        click.echo(report.plan(plan, "text", brief=not verbose), err=True, nl=False)
        later = f" (+ {cost.unpriced} priced at run time)" if cost.unpriced else ""
        click.echo(f"estimated cost (whatif): {cost.total:,.2f} Buzz{later}", err=True)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise SpendingRefused("this run spends Buzz and nobody can be asked",
                                  hint="pass --yes to confirm a non-interactive run")
        return click.confirm("Submit these workflows?", default=False, err=True)

    reporter = reporter_for(sys.stderr, verbose=verbose)

    def on_event(event: Event) -> None:
        if event.phase in (Phase.LOCKED, Phase.RESUMED, Phase.REMOTE):
            reporter.flush()  # what it logged before comes first
        if event.phase is Phase.LOCKED:
            click.echo(f"waiting for the run in progress ({event.detail}) to end", err=True)
        elif event.phase is Phase.RESUMED:
            click.echo(f"resuming interrupted run {event.detail}", err=True)
        elif event.phase is Phase.REMOTE:
            click.echo(event.detail, err=True)
        else:
            reporter(event)

    try:
        result = asyncio.run(arun(
            checked, emulator=wants_emulator(emulator), confirm=confirm, max_cost=max_cost,
            force=force, reroll=reroll, only=only, retry_failed=retry_failed,
            concurrency=concurrency, fail_fast=fail_fast, out_dir=out_dir, wait=wait_lock,
            keep_stale=keep_stale, update_lockfile=update_lockfile,
            api_key_file=api_key_file, on_event=on_event))
    except KeyboardInterrupt:
        reporter.close()
        click.echo(f"\ninterrupted. Nothing finished is lost.\n"
                   f"  resume:  {_command_line(file, ['run'])}\n"
                   f"  cancel:  {_command_line(file, ['cancel'])}", err=True)
        raise click.exceptions.Exit(130) from None
    finally:
        reporter.close()  # what it holds is written whatever ended the run
    click.echo(_summary(result), err=True)
    pushed = push_after_run(push_root, file, result) if push_root is not None else True
    if result.failed:
        raise StepsFailed(failed=result.failed, resume_hint=(
            f"after fixing the cause: {_command_line(file, ['run', '--retry-failed'])}"))
    if result.budget_stop:
        skipped = [r.name for r in result.results.values() if r.status == "not-run"]
        raise SpendingRefused(
            f"stopped at the cap: {result.budget_stop}; spent {result.spent:g} Buzz, "
            f"{len(skipped)} instance(s) not submitted"
            + (f" ({', '.join(skipped[:10])}{', …' if len(skipped) > 10 else ''})"
               if skipped else ""),
            hint=f"to continue, raise the cap: {_command_line(file, ['run', '--max-cost', 'N'])}")
    if not pushed:
        raise click.exceptions.Exit(1)  # the run succeeded; its push did not


def _summary(result: Any) -> str:
    parts = [f"{result.count(s)} {s}" for s in ("succeeded", "cached", "failed", "skipped",
                                                  "not-run") if result.count(s)]
    if result.preview:
        return (f"run {result.run_id} on the emulator: {', '.join(parts) or 'nothing to do'}; "
                f"emulated cost {result.spent:g} Buzz, nothing paid\n"
                f"  outputs:  {_shown(result.out_dir)}/\n  previews: {_shown(result.lockfile)}"
                "\n  (previews are never taken for paid work: a run against Civitai makes "
                "and pays for them)")
    return (f"run {result.run_id}: {', '.join(parts) or 'nothing to do'}; "
            f"spent {result.spent:g} Buzz\n"
            f"  outputs:  {_shown(result.out_dir)}/\n  lockfile: {_shown(result.lockfile)}")


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def status(file: Path, fmt: str) -> None:
    """Show the last run of a pipeline: each instance, its status, cost and artifacts."""
    from civflow.runner.history import last_run_status

    click.echo(last_run_status(file, fmt), nl=False)


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path),
              help="The output folder the runs used (default: out/ next to .civflow/).")
def checkout(paths: tuple[Path, ...], out_dir: Path | None) -> None:
    """Make out/ match the lockfiles, from the local store or the team's remote
    (nothing is submitted).

    PATHS are pipeline files, folders or globs (default: every pipeline under the
    current folder). Run it after switching branches: out/ then shows what the
    checked-out lockfiles record.
    """
    from civflow.loading import load_pipeline
    from civflow.remote.checkout import checkout as restore

    files = pipeline_files(paths)
    if not files:
        raise UsageError("no pipeline files found", hint="name files, folders or globs")
    missing = 0
    for file in files:
        done = restore(load_pipeline(file), out_dir)
        pulled = f", {done.pulled} pulled from the remote" if done.pulled else ""
        click.echo(f"{file}: {len(done.out.restored)} restored, {done.out.unchanged} "
                   f"unchanged, {len(done.removed)} removed{pulled}")
        if done.remote_problem:
            click.echo(f"  the remote could not help: {done.remote_problem}", err=True)
        for line in done.out.missing:
            click.echo(f"  not restored: {line}", err=True)
        missing += len(done.out.missing)
    if not _hook_installed():
        click.echo("tip: `civflow install` does this after every branch switch in this clone",
                   err=True)
    if missing:
        raise click.exceptions.Exit(1)


def _hook_installed() -> bool:
    """Whether this clone runs `civflow checkout` after a branch switch (a git hook that
    says so); True outside git, where there is nothing to suggest."""
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "--git-path", "hooks/post-checkout"],
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return True  # not a git repository (or no git): nothing to suggest
    try:
        return "civflow checkout" in Path(done.stdout.strip()).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--api-key-file", type=click.Path(path_type=Path, dir_okay=False))
def cancel(file: Path, api_key_file: Path | None) -> None:
    """Cancel the workflows of an unfinished run (against CIVITAI_BASE_URL)."""
    from civflow.connect import open_backend
    from civflow.runner.history import cancel_unfinished, unfinished_run

    journal = unfinished_run(file)
    if journal is None:  # known before any key is asked for
        click.echo("nothing to cancel: the last run of this pipeline finished")
        return

    async def main() -> list[str]:
        async with open_backend(False, api_key_file) as backend:
            return await cancel_unfinished(journal, backend)

    canceled = asyncio.run(main())
    if canceled:
        click.echo(f"canceled {len(canceled)} workflow(s): {', '.join(canceled)}")
    else:
        click.echo("nothing to cancel: no unfinished run has workflows in flight")
