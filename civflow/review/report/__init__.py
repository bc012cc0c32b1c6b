"""`civflow report`: a static HTML review page of pipelines' pictures, alone or against a base.

    written = write_report(files, out=Path("review"), base=None)
    written.pages      # [review/index.html, review/page-2.html, …]
    written.counts     # files copied and thumbnails encoded now, or reused

The folder is self-contained (inline CSS and JS, no network): `index.html`, more
pages when there are more cards than fit one, `files/` (the originals, copied) and
`thumbs/` (WebP thumbnails), both named by sha256, so a second report of the same
results copies and encodes nothing. It can be opened from disk or uploaded as a CI
artifact as it is.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from civflow.errors import CivflowError, UsageError
from civflow.review.comment import Totals, money
from civflow.review.diff import reading_order
from civflow.review.report.media import Media, MediaCounts, MediaFolder, Source
from civflow.review.report.model import Card, PipelineView
from civflow.review.report.render import (
    Grid,
    blocks_of,
    page_name,
    paginate,
    render_page,
)
from civflow.store.atomic import atomic_write_text
from civflow.store.journal import pipeline_runs
from civflow.store.objects import ObjectStore

__all__ = ["MARKER", "Grid", "MediaCounts", "Written", "check_out_dir", "write_report"]

MARKER = ".civflow-report"
PAGE_SIZE = 500
# Journals read to name the run that made each result (newest first).
MAX_RUNS = 200


@dataclass
class Written:
    """What `write_report` wrote."""

    out: Path
    pages: list[Path] = field(default_factory=list)
    counts: MediaCounts = field(default_factory=MediaCounts)
    cards: int = 0
    html_bytes: int = 0
    warnings: list[str] = field(default_factory=list)


def check_out_dir(out: Path, roots: Sequence[Path]) -> Path:
    """`out`, after refusing a folder inside a project's out/ or .civflow/, and an
    existing folder that holds something other than an earlier report."""
    target = Path(os.path.realpath(out))
    for root in roots:
        real = Path(os.path.realpath(root))
        for inner in (real / "out", real / ".civflow"):
            if target == inner or target.is_relative_to(inner):
                raise UsageError(
                    f"--out {out}: the report may not go inside {inner}",
                    hint="civflow owns that folder (checkout and pull rewrite it); "
                         "name a folder of its own, e.g. --out review/")
    if target.exists() and not target.is_dir():
        raise UsageError(f"--out {out}: a file of that name exists",
                         hint="name a folder (it is created)")
    if target.is_dir() and not (target / MARKER).is_file() and any(target.iterdir()):
        raise UsageError(f"--out {out}: the folder exists and does not hold a civflow report",
                         hint="name a new or empty folder; a report folder is recognised by "
                              f"its {MARKER} file and is updated in place")
    return target


def _run_ids(root: Path, pipeline: str) -> dict[str, str]:
    """Workflow id -> the id of the run that made it, from this machine's journals."""
    found: dict[str, str] = {}
    try:
        runs = pipeline_runs(root / ".civflow" / "runs", pipeline)[:MAX_RUNS]
    except CivflowError:
        return found
    for journal in reversed(runs):  # newer runs win
        try:
            state = journal.state()
        except CivflowError:
            continue
        for run in state.instances.values():
            if run.workflow_id:
                found[run.workflow_id] = journal.run_id
    return found


def write_report(files: Sequence[Path], *, out: Path, base: str | None = None,
                 grid: Grid | None = None, page_size: int = PAGE_SIZE,
                 cwd: Path | None = None, paths: Sequence[Path] = (),
                 views: Callable[[Sequence[Path], str | None, Path], list[PipelineView]]
                 | None = None) -> Written:
    """Write the report of `files` (compared with git ref `base` when given) to `out`;
    `paths` (as the user named them) also finds the pipelines the change removed."""
    cwd = Path(cwd or Path.cwd())
    if views is None:
        from civflow.review.report.compare import review_views

        def views(files: Sequence[Path], base: str | None, cwd: Path) -> list[PipelineView]:
            return review_views(files, base, cwd, paths)
    pipelines = reading_order(views(files, base, cwd))
    _check_grid(grid, pipelines)
    target = check_out_dir(out, [p.root for p in pipelines])
    target.mkdir(parents=True, exist_ok=True)
    (target / MARKER).write_text("civflow report\n", encoding="utf-8")
    written = Written(target)
    folder = MediaFolder(target)
    media = _media_lookup(pipelines, folder, written)
    run_ids = {p.name: _run_ids(p.root, p.name) for p in pipelines}

    def run_id(pipeline: str, workflow_id: str | None) -> str | None:
        return run_ids.get(pipeline, {}).get(workflow_id or "")

    blocks = blocks_of(pipelines, media, run_id, grid=grid or Grid(), page_size=page_size,
                       compared=base is not None)
    pages = paginate(blocks, page_size)
    title = "civflow report"
    subtitle = (f"head against {base}" if base else "head") + \
        f" · {sum(len(p.cards) for p in pipelines):,} instance(s)"
    if base is not None:  # the same money sentence as the plan and the comment
        subtitle += f" · {money(Totals.of(pipelines))}"
    for page in pages:
        text = render_page(page, pages, pipelines, title=title, subtitle=subtitle,
                           compared=base is not None)
        path = target / page_name(page.number)
        atomic_write_text(path, text)
        written.pages.append(path)
        written.html_bytes += len(text.encode("utf-8"))
    for stale in target.glob("page-*.html"):
        if stale not in written.pages:
            stale.unlink()
    written.counts = folder.counts
    written.cards = sum(len(p.cards) for p in pipelines)
    return written


def _check_grid(grid: Grid | None, pipelines: Sequence[PipelineView]) -> None:
    keys = {k for p in pipelines for s in p.steps for k, _ in s.axes}
    for axis, key in (("x", grid.x if grid else None), ("y", grid.y if grid else None)):
        if key is not None and key not in keys:
            known = ", ".join(sorted(keys)) or "none: no step has a matrix"
            raise UsageError(f"--grid {axis}={key}: no matrix step has the key '{key}'",
                             hint=f"matrix keys: {known}")


def _media_lookup(pipelines: Sequence[PipelineView], folder: MediaFolder,
                  written: Written) -> Callable[[Card, str], Sequence[Media]]:
    """Every artifact of every card made available in the report folder, up front."""
    from civflow.errors import RemoteError
    from civflow.remote import fetch_objects

    table: dict[tuple[str, str, str], tuple[Media, ...]] = {}
    for pipeline in pipelines:
        store = ObjectStore(pipeline.root / ".civflow" / "objects")
        sides = [(side, card, entry) for card in pipeline.cards
                 for side, entry in (("head", card.head), ("base", card.base),
                                     ("preview", card.preview))
                 if entry is not None]
        absent = {a.sha256 for _, _, entry in sides for a in entry.artifacts
                  if not store.has(a.sha256) and not folder.has(a)}
        if absent:
            try:
                fetch_objects(pipeline.root, sorted(absent))
            except RemoteError as exc:
                written.warnings.append(f"{pipeline.name}: {exc.message}")
        out = pipeline.root / "out"
        sources = {side: Source(store, out, lock_dir or pipeline.root)
                   for side, lock_dir in (("head", pipeline.head_lock_dir),
                                          ("base", pipeline.base_lock_dir),
                                          ("preview", pipeline.head_lock_dir))}
        folder.prepare((a, sources[side]) for side, _, entry in sides for a in entry.artifacts)
        for side, card, entry in sides:
            table[(pipeline.name, card.name, side)] = tuple(
                folder.media(a, sources[side]) for a in entry.artifacts)
    return lambda card, side: table.get((card.pipeline, card.name, side), ())
