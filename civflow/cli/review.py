"""`civflow report`: the HTML review page of pipelines' pictures, alone or against a base."""

from __future__ import annotations

import re
from pathlib import Path

import click

from civflow.errors import UsageError

_AXIS = re.compile(r"^\s*([xy])\s*=\s*([^,=]+?)\s*$")


def parse_grid(text: str | None) -> tuple[str | None, str | None]:
    """`x=KEY,y=KEY` (either part may be left out) -> (x key, y key)."""
    if not text:
        return None, None
    found: dict[str, str] = {}
    for part in text.split(","):
        match = _AXIS.match(part)
        if match is None or match.group(1) in found:
            raise UsageError(f"--grid {text!r}: expected x=KEY,y=KEY",
                             hint="name matrix keys, e.g. --grid x=strength,y=seed")
        found[match.group(1)] = match.group(2)
    if found.get("x") is not None and found.get("x") == found.get("y"):
        raise UsageError(f"--grid {text!r}: x and y must be different matrix keys")
    return found.get("x"), found.get("y")


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="The report folder (created; an earlier report there is updated).")
@click.option("--base", metavar="REF",
              help="Compare with the pipelines and lockfiles of this git ref: before / after "
                   "pairs of what changed, added and removed instances marked.")
@click.option("--grid", metavar="x=KEY,y=KEY",
              help="Matrix keys laid out across and down (default: the first two).")
@click.option("--page-size", type=click.IntRange(50, 20_000), default=500, show_default=True,
              help="Cards per page; a larger report continues on page-2.html, ….")
def report(paths: tuple[Path, ...], out_dir: Path, base: str | None, grid: str | None,
           page_size: int) -> None:
    """Write a static HTML report of the pipelines' pictures (opens from disk).

    PATHS are pipeline files, folders or globs (default: every pipeline under the
    current folder). Originals are copied into OUT/files and thumbnails made once into
    OUT/thumbs, both named by sha256; the folder works on its own as a CI artifact.
    """
    from civflow.loading.discover import pipeline_files
    from civflow.review.report import Grid, write_report

    files = pipeline_files(paths)
    if not files:
        raise UsageError("no pipeline files found", hint="name files, folders or globs")
    x, y = parse_grid(grid)
    written = write_report(files, out=out_dir, base=base, grid=Grid(x, y),
                           page_size=page_size, paths=paths or (Path("."),))
    for warning in written.warnings:
        click.echo(f"warning: {warning}", err=True)
    counts = written.counts
    click.echo(f"report: {written.cards:,} instance(s) on {len(written.pages)} page(s), "
               f"{counts.copied} file(s) copied, {counts.encoded} thumbnail(s) made, "
               f"{counts.reused} reused, {counts.unavailable} unavailable", err=True)
    for path in counts.damaged[:10]:
        click.echo(f"  skipped a damaged copy: {path}", err=True)
    click.echo(str(written.pages[0]))


__all__ = ["parse_grid", "report"]
