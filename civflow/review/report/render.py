"""The report's HTML: pages of blocks (before/after pairs, matrix grids, contact sheets).

Everything that comes from a pipeline, a lockfile or a server is escaped here; links
point only at `files/` and `thumbs/` names made from sha256 digests. A page holds
about `page_size` cards; a larger report continues on `page-2.html`, … .
"""

from __future__ import annotations

import difflib
import html
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from civflow.names import shown
from civflow.review.report.assets import CSS, JS
from civflow.review.report.media import THUMBNAILS, Media
from civflow.review.report.model import STATUSES, Card, PipelineView, StepView

__all__ = ["Block", "Grid", "Page", "blocks_of", "page_name", "paginate", "render_page"]

MediaFor = Callable[[Card, str], Sequence[Media]]  # (card, "head" | "base") -> its files
RunIdFor = Callable[[str, str | None], str | None]  # (pipeline, workflow id) -> run id
MAX_TEXT = 4000  # characters of one prompt or value shown; the rest is counted, not shown
MAX_FIELDS = 24  # input fields listed in one card's details


def _e(value: object) -> str:
    return html.escape(shown(str(value)), quote=True)


def _text(value: object, limit: int = MAX_TEXT) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                            sort_keys=True, default=str)
    if len(text) > limit:
        return _e(text[:limit]) + f"… <i>({len(text) - limit:,} more characters)</i>"
    return _e(text)


def _value(value: Any) -> str:
    """An axis value as the instance name writes it: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           default=str)


def _buzz(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


@dataclass(frozen=True)
class Grid:
    """How a matrix step is laid out: the x and y axes (y may be absent)."""

    x: str | None = None
    y: str | None = None


@dataclass(frozen=True)
class Block:
    """A unit of a page: never split across pages (large grids are cut by rows first)."""

    pipeline: str
    step: str | None
    html: str
    cards: int


@dataclass(frozen=True)
class Page:
    number: int
    blocks: tuple[Block, ...]


def page_name(number: int) -> str:
    return "index.html" if number == 1 else f"page-{number}.html"


_PREVIEW = ("preview: made on the emulator, not paid work (the real picture is made when "
            "the change is applied)")


class _Cards:
    """Card and pair markup for one report (its media and run-id lookups)."""

    def __init__(self, media: MediaFor, run_id: RunIdFor) -> None:
        self.media = media
        self.run_id = run_id

    def files(self, card: Card, side: str) -> str:
        entry = {"head": card.head, "base": card.base, "preview": card.preview}[side]
        if entry is None:
            return ""
        shown = self.media(card, side)
        if not shown:
            return '<div class="ph">no files</div>'
        return "".join(_media(m, card.name) for m in shown)

    def waiting(self, card: Card) -> str:
        """The head side of an instance with no paid result yet: its emulator preview,
        labelled as such, or what making it will take."""
        if card.preview is not None:
            return (f'<div class="preview-tag">{_PREVIEW}</div>'
                    f"{self.files(card, 'preview')}")
        return f'<div class="ph">{_pending(card)}</div>'

    def card(self, card: Card) -> str:
        side = "base" if card.status == "removed" else "head"
        if side == "head" and (card.head is None or not card.head_current):
            body = self.waiting(card)
        else:
            body = self.files(card, side)
        return (f'<figure class="card"{_data(card)}><div class="media">{body}</div>'
                f"<figcaption>{_badge(card.status)} {_e(card.name)}</figcaption>"
                f"{self.details(card, side)}</figure>")

    def pair(self, card: Card) -> str:
        before = self.files(card, "base") if card.base is not None else \
            '<div class="ph">added: no base version</div>'
        if card.head is None or not card.head_current:
            after = self.waiting(card) if card.status != "removed" \
                else '<div class="ph">removed: the head does not have it</div>'
        else:
            after = self.files(card, "head")
        # Why it changes (an upstream instance, named), then the fields edited here.
        fields = "".join(f"<li>{_e(r)}</li>" for r in card.reasons[:MAX_FIELDS])
        fields += "".join(f"<li><code>{_e(f.path)}</code>: {_change(f.old, f.new)}</li>"
                          for f in card.fields[:MAX_FIELDS])
        if len(card.fields) > MAX_FIELDS:
            fields += f"<li>… and {len(card.fields) - MAX_FIELDS} more fields</li>"
        what = (f'<div class="what">{_badge(card.status)} <b>{_e(card.name)}</b>'
                + (f'<ul class="fields">{fields}</ul>' if fields else "") + "</div>")
        return (f'<div class="pair"{_data(card)}>{what}'
                f'<div class="side before"><h4>before (base)</h4><div class="media">{before}'
                f"</div>{self.details(card, 'base') if card.base else ''}</div>"
                f'<div class="side after"><h4>after (head)</h4><div class="media">{after}'
                f"</div>{self.details(card, 'head') if card.head else ''}</div></div>")

    def details(self, card: Card, side: str) -> str:
        entry = card.head if side == "head" else card.base
        rows: list[tuple[str, str]] = [("instance", _e(card.name)), ("step", _e(card.step))]
        if card.decision:
            rows.append(("plan", _e(card.decision)))
        if card.estimate is not None and side == "head":
            rows.append(("estimate", f"{_buzz(card.estimate)} Buzz"))
        if entry is not None:
            given = entry.request.get("input")
            given = given if isinstance(given, Mapping) else {}
            for key, label in (("prompt", "prompt"), ("negativePrompt", "negative prompt")):
                if key in given:
                    rows.append((label, _text(given[key])))
            seed = given.get("seed", entry.seed)
            if seed is not None:
                rows.append(("seed", _text(seed)))
            if "model" in given:
                rows.append(("model", _text(given["model"])))
            loras = _loras(given.get("loras"))
            if loras:
                rows.append(("LoRAs", "<br>".join(loras)))
            rows += [("cost", f"{_buzz(entry.cost)} Buzz"),
                     ("workflow", _e(entry.workflow_id or "–")),
                     ("run", _e(self.run_id(card.pipeline, entry.workflow_id)
                                or "not known on this machine"))]
            if entry.completed_at:
                rows.append(("completed", _e(entry.completed_at)))
            others = [k for k in sorted(given) if k not in
                      ("prompt", "negativePrompt", "seed", "model", "loras")]
            rows += [(k, _input(given[k], card.made)) for k in others[:MAX_FIELDS]]
            rows += [("file", f'{_file_link(m)} {_size(m)}')
                     for m in self.media(card, side) if m.original]
        body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
        return f'<details><summary>details</summary><dl class="kv">{body}</dl></details>'


def _input(value: Any, made: Mapping[str, str]) -> str:
    """An input value, with an upstream instance's output shown as `output of NAME`."""
    def named(item: Any) -> Any:
        if isinstance(item, str) and item in made:
            return f"output of {made[item]}"
        if isinstance(item, Mapping):
            return {k: named(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [named(v) for v in item]
        return item
    return _text(named(value), 300)


_WORDS = re.compile(r"\s+|[^\s]+")
MAX_WORDS = 600  # strings longer than this are shown whole, old → new, not word by word


def _change(old: Any, new: Any) -> str:
    """old → new; two strings as one text with the words taken out struck through and
    the words put in underlined, so a one-word change in a long prompt stands out."""
    if isinstance(old, str) and isinstance(new, str):
        a, b = _WORDS.findall(old), _WORDS.findall(new)
        if len(a) <= MAX_WORDS and len(b) <= MAX_WORDS:
            out = []
            matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
            for op, i1, i2, j1, j2 in matcher.get_opcodes():
                if op == "equal":
                    out.append(_e("".join(a[i1:i2])))
                    continue
                if i2 > i1:
                    out.append(f"<del>{_e(''.join(a[i1:i2]))}</del>")
                if j2 > j1:
                    out.append(f"<ins>{_e(''.join(b[j1:j2]))}</ins>")
            return f'<span class="diff">{"".join(out)}</span>'
    shown_old = "<i>absent</i>" if old is None else _text(old, 300)
    shown_new = "<i>absent</i>" if new is None else _text(new, 300)
    return f"<del>{shown_old}</del> → <ins>{shown_new}</ins>"


def _size(media: Media) -> str:
    art = media.artifact
    dims = f"{art.width}×{art.height}, " if art.width and art.height else ""
    return f"({dims}{art.size / 1024:,.0f} KB)"


def _loras(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [f"{_e(air)} @ {_text(strength, 100)}" for air, strength in value.items()]
    if isinstance(value, list):
        return [_text(item, 300) for item in value]
    return []


def _data(card: Card) -> str:
    decision = f' data-decision="{_e(card.decision)}"' if card.decision else ""
    return f' data-status="{_e(card.status)}" data-instance="{_e(card.name)}"{decision}'


def _badge(status: str) -> str:
    if status == "unchanged":
        return ""
    return f'<span class="st st-{_e(status)}">{_e(status)}</span>'


def _pending(card: Card) -> str:
    if card.decision == "skipped":
        return "skipped on the head (its condition is false)"
    cost = f" (estimate {_buzz(card.estimate)} Buzz)" if card.estimate is not None else ""
    # One span: the placeholder is a flex box, whose loose children would be columns.
    return f"<span>not generated yet: <code>civflow run</code> makes it{cost}</span>"


def _media(media: Media, name: str) -> str:
    if not media.available:
        return f'<div class="ph">unavailable: {_e(media.missing or "not found")}</div>'
    size = f' width="{media.thumb_size[0]}" height="{media.thumb_size[1]}"' \
        if media.thumb_size else ""
    if media.kind == "video":
        poster = f' poster="{_e(media.thumb)}"' if media.thumb else ""
        return (f'<video controls preload="none"{poster}{size} src="{_e(media.original)}">'
                f'<a href="{_e(media.original)}">video</a></video>')
    if media.kind == "image" and (media.thumb or not THUMBNAILS):
        # Without Pillow (no civflow[report]) the page shows the picture itself.
        return (f'<a href="{_e(media.original)}"><img src="{_e(media.thumb or media.original)}"'
                f' loading="lazy" decoding="async"{size} alt="{_e(name)}"></a>')
    return _file_link(media, 'class="ph" ')


def _file_link(media: Media, attributes: str = "") -> str:
    """A link to a published file by its recorded name; anything but a picture or a
    video is a download, never opened as a page (see media.PUBLISHED)."""
    label = media.artifact.path.rsplit("/", 1)[-1]
    download = "" if media.kind in ("image", "video") else " download"
    return f'<a {attributes}href="{_e(media.original)}"{download}>{_e(label)}</a>'


def _grid_axes(step: StepView, grid: Grid) -> tuple[str, str | None]:
    keys = [k for k, _ in step.axes]
    x = grid.x if grid.x in keys else keys[0]
    rest = [k for k in keys if k != x]
    y = grid.y if grid.y in rest else (rest[0] if rest else None)
    return x, y


def _grids(step: StepView, cards: Sequence[Card], grid: Grid, pipeline: str,
           view: _Cards, page_size: int) -> tuple[list[Block], list[Card]]:
    """Blocks of tables for a matrix step, and the cards that fit no cell."""
    x, y = _grid_axes(step, grid)
    values = dict(step.axes)
    extra = [k for k, _ in step.axes if k not in (x, y)]
    cells: dict[tuple[str, ...], Card] = {}
    loose: list[Card] = []
    allowed = {k: {_value(v) for v in vs} for k, vs in values.items()}
    for card in cards:
        if set(card.matrix) != set(values) or any(
                _value(card.matrix[k]) not in allowed[k] for k in values):
            loose.append(card)
            continue
        cells[tuple(_value(card.matrix[k]) for k, _ in step.axes)] = card
    order = [k for k, _ in step.axes]
    blocks: list[Block] = []
    ys: list[Any] = list(values[y]) if y else [None]
    rows_per = max(1, page_size // max(1, len(values[x])))
    for combo in itertools.product(*(values[k] for k in extra)):
        fixed = dict(zip(extra, combo, strict=True))
        where = ", ".join(f"{k}={_value(v)}" for k, v in fixed.items())
        for start in range(0, len(ys), rows_per):
            chunk = ys[start:start + rows_per]
            head = "".join(f'<th scope="col">{_e(_value(v))}</th>' for v in values[x])
            corner = f"{_e(y)} \\ {_e(x)}" if y else _e(x)
            rows, count = [], 0
            for yv in chunk:
                tds = []
                for xv in values[x]:
                    at = {**fixed, x: xv, **({y: yv} if y else {})}
                    found = cells.get(tuple(_value(at[k]) for k in order))
                    if found is None:
                        tds.append('<td class="empty">not in the lockfile</td>')
                    else:
                        tds.append(f"<td>{view.card(found)}</td>")
                        count += 1
                label = f'<th scope="row">{_e(_value(yv))}</th>' if y else "<th></th>"
                rows.append(f"<tr>{label}{''.join(tds)}</tr>")
            part = f" (rows {start + 1}–{start + len(chunk)} of {len(ys)})" \
                if len(ys) > rows_per else ""
            caption = (f"{_e(step.name)}: {_e(x)} across" + (f", {_e(y)} down" if y else "")
                       + (f" · {_e(where)}" if where else "") + part)
            # The pictures shrink to fit the window's width down to half size; a grid
            # wider than that scrolls sideways in a box of its own, never the page.
            table = (f'<p class="scroll-hint" hidden>{len(values[x])} columns: scroll '
                     f'sideways for the rest →</p><div class="gridwrap" tabindex="0" '
                     f'role="region" aria-label="{_e(step.name)} grid">'
                     f'<table class="grid" data-step="{_e(step.name)}" data-x="{_e(x)}"'
                     f' data-y="{_e(y or "")}" style="--cols:{len(values[x])}">'
                     f'<caption>{caption}</caption>'
                     f'<thead><tr><th class="corner">{corner}</th>{head}</tr></thead>'
                     f"<tbody>{''.join(rows)}</tbody></table></div>")
            blocks.append(Block(pipeline, step.name, table, max(count, 1)))
    return blocks, loose


def _sheet(cards: Sequence[Card], pipeline: str, step: str, view: _Cards,
           page_size: int) -> list[Block]:
    blocks = []
    for start in range(0, len(cards), page_size):
        chunk = cards[start:start + page_size]
        inner = "".join(view.card(c) for c in chunk)
        blocks.append(Block(pipeline, step, f'<div class="sheet">{inner}</div>', len(chunk)))
    return blocks


def blocks_of(pipelines: Sequence[PipelineView], media: MediaFor, run_id: RunIdFor, *,
              grid: Grid, page_size: int, compared: bool) -> list[Block]:
    """Every block of the report in reading order: per pipeline its changes (when
    compared with a base), then per step a grid (matrix steps) or a contact sheet."""
    view = _Cards(media, run_id)
    blocks: list[Block] = []
    for pipeline in pipelines:
        notes = "".join(f'<p class="note">{_e(n)}</p>' for n in pipeline.notes)
        blocks.append(Block(pipeline.name, None, (
            f'<h2 id="p-{_e(pipeline.name)}">{_e(pipeline.name)} <small>{_e(pipeline.path)}'
            + (f" · {_e(pipeline.status)}" if compared else "") + f"</small></h2>{notes}"),
            0))
        if compared:
            moved = [c for c in pipeline.cards if c.status != "unchanged"]
            if moved:
                blocks.append(Block(pipeline.name, None,
                                    f"<h3>Changes <small>{len(moved)} instance(s)</small></h3>",
                                    0))
            for start in range(0, len(moved), page_size):
                chunk = moved[start:start + page_size]
                blocks.append(Block(pipeline.name, None, '<div class="pairs">'
                                    + "".join(view.pair(c) for c in chunk) + "</div>",
                                    len(chunk)))
        for step in pipeline.steps:
            shown = [c for c in step.cards if c.status != "removed"] if compared \
                else list(step.cards)
            if not shown:
                continue
            blocks.append(Block(pipeline.name, step.name, (
                f'<h3 id="s-{_e(pipeline.name)}-{_e(step.name)}">{_e(step.name)} '
                f"<small>{_e(step.type)} · {len(shown)} instance(s)</small></h3>"), 0))
            loose = shown
            if step.axes:
                grids, loose = _grids(step, shown, grid, pipeline.name, view, page_size)
                blocks += grids
            blocks += _sheet(loose, pipeline.name, step.name, view, page_size)
    return blocks


def paginate(blocks: Sequence[Block], page_size: int) -> list[Page]:
    """Blocks packed in order onto pages of about `page_size` cards; a heading stays
    with the block after it."""
    pages: list[list[Block]] = [[]]
    count = 0
    held: list[Block] = []
    for block in blocks:
        if block.cards == 0:
            held.append(block)
            continue
        if count and count + block.cards > page_size:
            pages.append([])
            count = 0
        pages[-1] += [*held, block]
        held = []
        count += block.cards
    pages[-1] += held
    return [Page(i + 1, tuple(p)) for i, p in enumerate(pages)]


def _summary(pipelines: Sequence[PipelineView], compared: bool) -> str:
    """Per pipeline: with a base, instances by status and the money; alone, instances by
    the plan's decision and the estimate of what would run."""
    columns = list(STATUSES) if compared else sorted(
        {c.decision or "locked" for p in pipelines for c in p.cards})
    money = ("replaces (base spent)", "merging costs") if compared else ("estimate",)
    head = ("<tr><th>pipeline</th>" + ("<th>status</th>" if compared else "")
            + "".join(f"<th>{_e(c)}</th>" for c in [*columns, *money]) + "</tr>")
    rows = []
    for p in pipelines:
        counts = dict.fromkeys(columns, 0)
        for card in p.cards:
            key = card.status if compared else (card.decision or "locked")
            counts[key] = counts.get(key, 0) + 1
        later = f" + {p.unpriced} priced at run time" if p.unpriced else ""
        cost = (f"<td>{_buzz(p.base_spent)}</td><td>{_buzz(p.delta)}{later}</td>"
                if compared else f"<td>{_buzz(p.estimate)}{later}</td>")
        rows.append(f'<tr><td><a href="#p-{_e(p.name)}">{_e(p.name)}</a></td>'
                    + (f"<td>{_e(p.status)}</td>" if compared else "")
                    + "".join(f"<td>{counts[c]}</td>" for c in columns) + cost + "</tr>")
    return f'<table class="summary">{head}{"".join(rows)}</table>'


def _filters(pipelines: Sequence[PipelineView], compared: bool) -> str:
    counts = {s: 0 for s in STATUSES}
    decisions: set[str] = set()
    for card in itertools.chain.from_iterable(p.cards for p in pipelines):
        counts[card.status] += 1
        if card.decision:
            decisions.add(card.decision)
    boxes = "".join(
        f'<label><input type="checkbox" data-filter value="{s}" checked> {s} ({counts[s]})'
        "</label>" for s in STATUSES if counts[s]) if compared else ""
    select = ""
    if decisions:
        options = "".join(f'<option value="{_e(d)}">{_e(d)}</option>' for d in sorted(decisions))
        select = (f'<label>plan: <select data-decision><option value="">any</option>{options}'
                  "</select></label>")
    return f'<div class="filters">{boxes}{select}</div>'


def _nav(pages: Sequence[Page], current: int) -> str:
    if len(pages) < 2:
        return ""
    links = []
    for page in pages:
        steps = sorted({f"{b.pipeline}/{b.step}" if b.step else b.pipeline
                        for b in page.blocks if b.cards})
        tip = _e(", ".join(steps)[:300])
        links.append(f"<b>{page.number}</b>" if page.number == current else
                     f'<a href="{page_name(page.number)}" title="{tip}">{page.number}</a>')
    return f'<nav class="pages">pages: {"".join(links)}</nav>'


def render_page(page: Page, pages: Sequence[Page], pipelines: Sequence[PipelineView], *,
                title: str, subtitle: str, compared: bool) -> str:
    nav = _nav(pages, page.number)
    body = "".join(block.html for block in page.blocks)
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="generator" content="civflow report">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{_e(title)}</h1><span class="note">{_e(subtitle)}</span>'
        f"{_filters(pipelines, compared)}{nav}</header><main>"
        f"{_summary(pipelines, compared) if page.number == 1 else ''}{body}"
        f"{nav}</main><script>{JS}</script></body></html>\n")


def statuses_in(cards: Iterable[Card]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for card in cards:
        counts[card.status] = counts.get(card.status, 0) + 1
    return counts
