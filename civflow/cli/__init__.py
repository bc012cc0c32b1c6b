"""The `civflow` command line: parse, call one library function, render, exit.

Commands are imported only when invoked, so `civflow validate` never pays for
httpx, uvicorn or Pillow.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

import click

from civflow import __version__
from civflow.cli._exit import exit_code_for, render_error
from civflow.errors import CivflowError

# httpx imports its own command line, and with it rich's console and pygments (40 ms of
# `civflow run`'s start), whenever click and rich are installed, as they are here;
# civflow never calls it. Until httpx imports it lazily (encode/httpx#3547), civflow's
# command leaves it out, and httpx keeps the stub `main` it has for that case. Only the
# command line imports this module: a program that imports civflow is not affected.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

# name -> "module:attribute" of a click.Command; imported on first use.
_COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("civflow.cli.check", "validate", ),
    "plan": ("civflow.cli.check", "plan"),
    "render": ("civflow.cli.check", "render"),
    "graph": ("civflow.cli.check", "graph"),
    "steps": ("civflow.cli.check", "steps"),
    "run": ("civflow.cli.execute", "run"),
    "status": ("civflow.cli.execute", "status"),
    "cancel": ("civflow.cli.execute", "cancel"),
    "checkout": ("civflow.cli.execute", "checkout"),
    "push": ("civflow.cli.remote", "push"),
    "pull": ("civflow.cli.remote", "pull"),
    "lock": ("civflow.cli.lock", "lock"),
    "report": ("civflow.cli.review", "report"),
    "emulator": ("civflow.cli.emulator", "emulator"),
    "init": ("civflow.cli.scaffold", "init"),
    "install": ("civflow.cli.scaffold", "install"),
    "schema": ("civflow.cli.scaffold", "schema"),
}

_HELP = {
    "validate": "Check pipeline files: schema, templates, references, catalog, cycles.",
    "plan": "Show every instance in order, whether it runs or is cached, and why.",
    "render": "Print the exact workflow bodies that would be sent, as JSON.",
    "graph": "Print the step graph as Mermaid or DOT.",
    "steps": "Explain a step type from the catalog: its inputs (bounds, defaults), its outputs.",
    "run": "Execute a pipeline.",
    "status": "Show the last run of a pipeline.",
    "cancel": "Cancel the workflows of an unfinished run.",
    "checkout": "Make out/ match the lockfiles, from the local store.",
    "push": "Upload the lockfiles' artifacts to the project's remote.",
    "pull": "Download the lockfiles' artifacts from the remote, and restore out/.",
    "lock": "Lockfiles in git: repair after a conflicting merge, prune earlier results.",
    "report": "Write a static HTML review page of the pictures (with --base: before/after).",
    "emulator": "Serve the local Civitai emulator on 127.0.0.1.",
    "init": "Start a repository: example pipeline, editor schema, CI workflow, hooks.",
    "install": "Set up this clone (idempotent): the hook that restores out/ on checkout.",
    "schema": "Print the editor JSON Schema (every step type, field, enum and bound).",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        command = getattr(module, target[1])
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing help must not import every command module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, _HELP[name]) for name in _COMMANDS])


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
# civflow.__version__ is the one place the version is written (pyproject.toml reads it),
# so an editable install whose metadata is stale still tells the truth.
@click.version_option(__version__, "--version", prog_name="civflow",
                      message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Declarative workflow-as-code for the Civitai orchestration API."""
    # The command's module is imported now. `run` goes on starting up (the runner, the
    # HTTP client, the pipeline's check) and says itself when it is done.
    if ctx.invoked_subcommand != "run":
        started()


# Start-up (imports, then the pipeline's check) makes some 70,000 objects that live as
# long as the process. With the cyclic collector on, it walks them again at every full
# collection while they are made, through the run and once more at exit: 50 ms of a
# run's start. The program pauses it until start-up is over, then moves what exists to
# the generation it never scans (gc.freeze). A run then makes and drops containers by
# the hundred thousand (answers, records, entries), nearly all freed by their count
# alone: collecting after every 700 (Python's default) cost a 3,000-instance run 390
# young and 36 middle collections, 120 ms; after every 50,000 it is a handful, 40 ms.
# Programs that import civflow, and tests that call `main`, keep their collector as it is.
_paused = False
_YOUNG = 50_000  # allocations between young collections, once started


def entry() -> None:
    """The `civflow` program: the console script and `python -m civflow`."""
    global _paused
    gc.disable()
    _paused = True
    main()


def started() -> None:
    """Start-up is over: the collector runs again, blind to what start-up made."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.set_threshold(_YOUNG, *gc.get_threshold()[1:])
        gc.enable()


def main(argv: list[str] | None = None) -> Any:
    """Entry point: the only place that turns errors into exit codes."""
    try:
        return _main(argv)
    finally:
        started()


def _main(argv: list[str] | None) -> Any:
    try:
        # Without standalone mode click *returns* the code of a `click.exceptions.Exit`.
        code = cli.main(args=argv, prog_name="civflow", standalone_mode=False)
    except CivflowError as exc:
        click.echo(render_error(exc), err=True)
        sys.exit(exit_code_for(exc))
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2 if isinstance(exc, click.UsageError) else 1)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
