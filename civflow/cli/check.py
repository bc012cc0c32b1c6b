"""`civflow validate`, `plan`, `render` and `graph`: the commands a reviewer runs in CI."""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from civflow.check import Checked
from civflow.cli import report
from civflow.errors import CivflowError, PipelineInvalid, UsageError
from civflow.origin import Origin

if TYPE_CHECKING:
    from civflow.planning import PlanOptions

_var = click.option("--var", "vars_", multiple=True, metavar="NAME=VALUE",
                    help="Override a variable (repeatable).")
_vars_file = click.option("--vars-file", "vars_files", multiple=True,
                          type=click.Path(path_type=Path), help="YAML/JSON file of variables.")
_strict = click.option("--strict", is_flag=True,
                       help="Kept for old scripts: step types, engines and fields outside the "
                            "catalog are errors by default now (a step's 'unchecked: true' "
                            "lets them through).")


def _options(func: Callable[..., Any]) -> Callable[..., Any]:
    return _var(_vars_file(_strict(func)))


def load_checked(path: Path, vars_: Sequence[str], vars_files: Sequence[Path], *,
                 strict: bool = False) -> Checked:
    """Load, schema-check and statically check one pipeline file."""
    from civflow.check import check_pipeline
    from civflow.loading import load_pipeline, parse_var_overrides

    overrides = parse_var_overrides(vars_, vars_files)
    return check_pipeline(load_pipeline(path, overrides), strict=strict)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "github"]), default="text",
              show_default=True)
@_options
def validate(paths: tuple[Path, ...], fmt: str, vars_: tuple[str, ...],
             vars_files: tuple[Path, ...], strict: bool) -> None:
    """Check pipeline files: schema, templates, references, catalog, cycles.

    PATHS are pipeline files, folders (searched below, as `plan` does) or globs. Every
    independent error of every file is reported in one run, in file order.
    """
    from civflow.check import check_file
    from civflow.cli._exit import exit_code_for
    from civflow.loading import parse_var_overrides

    files = _named_files(paths)
    if not files:
        raise UsageError("no pipeline files found", hint="name files, folders or globs")
    results: list[dict[str, Any]] = []
    worst = 0
    for path in files:
        try:
            checked = check_file(path, parse_var_overrides(vars_, vars_files), strict=strict)
        except PipelineInvalid as exc:
            results.append(report.file_result(path, exc.diagnostics))
            worst = worst or 2
        except CivflowError as exc:
            results.append(report.file_failure(path, exc))
            worst = worst or exit_code_for(exc)
        else:
            results.append(report.file_result(path, checked.warnings, checked=checked))
    click.echo(report.validation(results, fmt), nl=False)
    if worst:
        raise click.exceptions.Exit(worst)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text",
              show_default=True)
@click.option("--base", "base_ref", metavar="REF",
              help="Compare with the pipelines, vars files, includes and lockfiles as of "
                   "this git ref (read through git, nothing is checked out): per instance "
                   "added / removed / changed, each field old -> new, and the Buzz delta.")
@click.option("--report-url", metavar="URL",
              help="With --base --format markdown: where the HTML report is (a CI "
                   "artifact), linked from the comment.")
@click.option("--force", "force", multiple=True, metavar="STEP",
              help="Plan STEP and its dependents as forced ('*' for all).")
@click.option("--reroll", multiple=True, metavar="STEP", help="Plan new seeds for STEP.")
@click.option("--only", multiple=True, metavar="GLOB",
              help="Only these steps (and what they need).")
@click.option("--batch", type=click.IntRange(1, 100), metavar="N",
              help="Plan as `run --batch N` would submit: up to N steps per workflow.")
@click.option("--retry-failed", is_flag=True,
              help="Plan as `run --retry-failed` would run: failed instances are sent again.")
@click.option("--emulator", is_flag=True,
              help="Plan as `run --emulator` would run: only the emulator's own previews "
                   "are cached (they are never taken for paid work, nor paid work for them).")
@_options
def plan(paths: tuple[Path, ...], fmt: str, base_ref: str | None, report_url: str | None,
         force: tuple[str, ...], reroll: tuple[str, ...], only: tuple[str, ...],
         batch: int | None, retry_failed: bool, emulator: bool, vars_: tuple[str, ...],
         vars_files: tuple[Path, ...], strict: bool) -> None:
    """Show every instance in order, whether it runs or is cached, and why.

    PATHS are pipeline files, folders (searched below) or globs. With --base REF, show
    what the change does against that git ref instead: with --format markdown a pull
    request comment (bounded in size, with a hidden marker for a sticky comment), with
    --format json every field of every instance.
    """
    from civflow.errors import UsageError
    from civflow.planning import PlanOptions

    options = PlanOptions(force=frozenset(force), reroll=frozenset(reroll), only=only,
                          retry_failed=retry_failed)
    if base_ref is not None:
        _plan_against_base(paths, base_ref, fmt, report_url, options, vars_, vars_files,
                           strict)
        return
    if report_url is not None:
        raise UsageError("--report-url goes with --base (it is linked from the PR comment)")
    files = _named_files(paths)
    if not files:
        raise UsageError("no pipeline files found", hint="name files, folders or globs")
    from civflow.connect import wants_emulator

    origin = Origin.EMULATOR if wants_emulator(emulator) else Origin.CIVITAI
    shown = [_plan_one(file, fmt, options, vars_, vars_files, strict, batch, origin)
             for file in files]
    if fmt == "json" and len(shown) > 1:
        click.echo("[\n" + ",\n".join(s.rstrip("\n") for s in shown) + "\n]")
    else:
        click.echo("\n".join(shown), nl=False)


def _named_files(paths: Sequence[Path]) -> list[Path]:
    """Pipeline files named by files, folders and globs (`civflow checkout` rules); a
    plain path that does not exist is kept, so loading it says 'no such pipeline file'."""
    from civflow.loading.discover import pipeline_files

    found: list[Path] = []
    for given in paths:
        if given.exists() or any(c in str(given) for c in "*?["):
            found += pipeline_files([given])
        else:
            found.append(given)
    return list(dict.fromkeys(found))


def _plan_one(file: Path, fmt: str, options: PlanOptions, vars_: Sequence[str],
              vars_files: Sequence[Path], strict: bool, batch: int | None = None,
              origin: Origin = Origin.CIVITAI) -> str:
    from civflow.grouping import batch_size
    from civflow.runner import prepare

    checked = _batched(load_checked(file, vars_, vars_files, strict=strict), batch)
    _check_step_names(checked, [*options.force, *options.reroll], allow_star=True)
    # The same preparation `civflow run` makes (lockfile, an interrupted run's journal),
    # so what plan shows is what run does.
    prepared = prepare(checked, options, origin=origin)
    for warning in checked.warnings:
        click.echo(warning.render(), err=True)
    click.echo(report.vars_note(checked.spec, prepared.lock, prepared.lock_path), err=True,
               nl=False)
    workflows = prepared.grouping.workflows if batch_size(checked.spec.batch) > 1 else ()
    if all(len(w.members) == 1 for w in workflows):
        workflows = ()  # one instance per workflow: nothing to show beyond the plan
    return report.plan(prepared.plan, fmt, workflows)


def _batched(checked: Checked, batch: int | None) -> Checked:
    """`--batch N` as `civflow run` applies it: over the file's `batch` key."""
    if batch is None:
        return checked
    return dataclasses.replace(checked, spec=dataclasses.replace(checked.spec,
                                                                 batch_override=batch))


def _plan_against_base(paths: Sequence[Path], base_ref: str, fmt: str,
                       report_url: str | None, options: PlanOptions, vars_: Sequence[str],
                       vars_files: Sequence[Path], strict: bool) -> None:
    from civflow.errors import UsageError
    from civflow.review.diff import compare

    if report_url is not None and not report.safe_url(report_url):
        raise UsageError(f"--report-url {report_url!r}: expected an http(s) URL",
                         hint="without spaces, quotes, parentheses or angle brackets")
    heads = [f for f in _named_files(paths) if f.exists()]
    review = compare(paths, base_ref, cwd=Path.cwd(), head_files=heads, var_pairs=vars_,
                     vars_files=vars_files, options=options, strict=strict)
    click.echo(report.review(review, fmt, report_url=report_url), nl=False)


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--batch", type=click.IntRange(1, 100), metavar="N",
              help="Render as `run --batch N` would submit: up to N steps per workflow, "
                   "chains fused by $ref.")
@_options
def render(file: Path, batch: int | None, vars_: tuple[str, ...], vars_files: tuple[Path, ...],
           strict: bool) -> None:
    """Print the exact workflow bodies that would be sent, as JSON.

    The workflows that are known before the run come first, each with its member
    instances (up to `batch` of them: the pipeline's key, --batch, or the default) and
    its body as sent (fused inputs as {"$ref", "path"}); what is only known at run
    time follows, one instance at a time.
    """
    from civflow.grouping import rendered_bodies
    from civflow.request import batch_body
    from civflow.runner import prepare
    from civflow.store.journal import external_id

    checked = _batched(load_checked(file, vars_, vars_files, strict=strict), batch)
    prepared = prepare(checked)
    result = prepared.plan
    bodies: list[dict[str, Any]] = []
    shown: set[str] = set()
    packed_steps: set[str] = set()
    for group, body in rendered_bodies(checked, result, prepared.grouping):
        one = {"instance": group.members[0]} if len(group.members) == 1 else {}
        bodies.append({**one, "workflow": list(group.members), "body": body})
        shown.update(group.members)
        packed_steps.update(n.split("[#", 1)[0] for n in group.members if "[#" in n)
    for planned in result.instances:
        inst = planned.instance
        if inst.name in shown or (inst.fanout and inst.step in packed_steps):
            continue
        key = inst.fingerprint
        attempt = result.policy.attempt(inst, key)[0] if key else 1
        bodies.append({"instance": inst.name, "workflow": [inst.name], "body": batch_body(
            checked.spec, [(inst, None)], run_id=None,
            external_id=external_id(key, attempt) if key else None)})
    click.echo(json.dumps(bodies, indent=2, ensure_ascii=False))


@click.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid",
              show_default=True)
@_options
def graph(file: Path, fmt: str, vars_: tuple[str, ...], vars_files: tuple[Path, ...],
          strict: bool) -> None:
    """Print the step graph as Mermaid or DOT."""
    checked = load_checked(file, vars_, vars_files, strict=strict)
    click.echo(report.graph(checked, fmt), nl=False)


def _check_step_names(checked: Checked, names: Sequence[str], *, allow_star: bool) -> None:
    from civflow.errors import UsageError

    for name in names:
        if name in checked.spec.steps or (allow_star and name == "*"):
            continue
        raise UsageError(f"unknown step '{name}' (steps: {', '.join(checked.spec.steps)})")


__all__ = ["graph", "load_checked", "plan", "render", "validate"]


@click.command()
@click.argument("target", required=False, metavar="[TYPE[/ENGINE]]")
def steps(target: str | None) -> None:
    """Explain step types from the catalog, like `kubectl explain`.

    Without TYPE, every type with its number of input shapes; with TYPE (or
    TYPE/ENGINE, TYPE/ECOSYSTEM), each input shape's fields with their type, bounds
    and defaults, and the output fields a template can read.
    """
    from civflow import catalog
    from civflow.errors import UsageError

    variants = catalog.catalogued_variants()
    if target is None:
        counts: dict[str, int] = {}
        for variant in variants:
            counts[variant.step_type] = counts.get(variant.step_type, 0) + 1
        for name, count in counts.items():
            click.echo(f"{name:<28} {count} input shape{'s' if count > 1 else ''}")
        return
    step_type, _, scope = target.partition("/")
    mine = [v for v in variants if v.step_type == step_type and
            (not scope or scope in v.discriminators.values())]
    if not mine:
        known = sorted({v.step_type for v in variants})
        close = difflib.get_close_matches(step_type, known, n=1)
        raise UsageError(f"no step type {target!r} in the catalog",
                         hint=f"did you mean '{close[0]}'?" if close else
                         "run 'civflow steps' for the list")
    lines: list[str] = []
    for variant in mine:
        lines.append(f"{variant.label}")
        schema = variant.schema
        needed = set(schema.get("required", ()))
        for name, spec_ in schema.get("properties", {}).items():
            if name in variant.discriminators:
                continue
            lines.append(f"  {name:<24} {_field_text(spec_, name in needed)}")
        lines.append("")
    lines.append(f"{step_type} output (steps.NAME.output..., steps.NAME[\"KEY\"]...):")
    for path, note in catalog.output_fields(step_type):
        lines.append(f"  {path:<32} {note}".rstrip())
    click.echo("\n".join(lines))


def _field_text(field: Mapping[str, Any], required: bool) -> str:
    """`integer, 1..100, default 20, required` from one JSON Schema property."""
    kind = field.get("type")
    parts = ["/".join(kind) if isinstance(kind, list) else str(kind or "any")]
    if "enum" in field:
        shown = ", ".join(json.dumps(v) for v in field["enum"][:8])
        parts.append(f"one of {shown}{', ...' if len(field['enum']) > 8 else ''}")
    low, high = field.get("minimum"), field.get("maximum")
    if low is not None or high is not None:
        parts.append(f"{'' if low is None else low}..{'' if high is None else high}")
    if "maxLength" in field:
        parts.append(f"at most {field['maxLength']} characters")
    if "default" in field:
        parts.append(f"default {json.dumps(field['default'])}")
    if required:
        parts.append("required")
    return ", ".join(parts)
