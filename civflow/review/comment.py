"""A `Review` as a pull-request comment (Markdown), as JSON, and as a terminal diff.

The comment is bounded whatever the change: a summary table first, then the details
grouped by step in `<details>` sections, cut off before `MAX_COMMENT` characters with a
line that says what was left out and how to get all of it. It opens with a hidden,
stable marker (`MARKER`) so CI edits one sticky comment instead of adding new ones.
Everything that comes from a pipeline, a vars file or a lockfile (prompts, instance
names, values) is untrusted: in Markdown it is escaped so it can neither format, link,
mention (`@team`) nor inject HTML, and long values are shortened. JSON carries every
value whole; see `review_json` for its keys.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from civflow.names import markdown_text
from civflow.review.diff import (
    FieldChange,
    InstanceChange,
    PipelineReview,
    Review,
    reading_order,
)

__all__ = ["JSON_SCHEMA", "MARKER", "MAX_COMMENT", "markdown", "review_json", "safe_url",
           "text"]

MARKER = "<!-- civflow-plan -->"
# GitHub refuses comments over 65,536 characters; stay well under it.
MAX_COMMENT = 60_000
JSON_SCHEMA = 1
# A value in the comment is cut to this many characters (JSON keeps it whole).
MAX_VALUE = 120
# Rows of the per-pipeline summary table before the rest are counted in one row.
MAX_PIPELINE_ROWS = 40
# Distinct field changes listed per step ("what changed"), the most frequent first.
MAX_PATTERNS = 8
# Field changes shown per instance in the comment.
MAX_INSTANCE_FIELDS = 4

_MARK = {"added": "+", "removed": "-", "changed": "~", "unchanged": "="}


# -- text pieces -----------------------------------------------------------------------

_URL = re.compile(r"^https?://[^\s<>()\[\]\"'`\\|]{1,2000}$")


def safe_url(url: str) -> bool:
    """An http(s) URL that cannot break out of a Markdown link."""
    return _URL.match(url) is not None



escape = markdown_text


def shorten(text: str, limit: int = MAX_VALUE) -> str:
    """`text` cut in the middle to at most `limit` characters."""
    if len(text) <= limit:
        return text
    keep = limit - 1
    head = keep * 2 // 3
    return f"{text[:head]}…{text[len(text) - (keep - head):]}"


def value_text(value: Any) -> str:
    """A request value as a person reads it: strings quoted, the rest as JSON."""
    if value is None:
        return "(none)"
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def buzz(value: float | None) -> str:
    if value is None:
        return "?"
    if abs(value) >= 10 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


def _context(old: str, new: str, limit: int, around: int = 30) -> tuple[str, str]:
    """Two long strings cut to the part that differs, with `around` characters of context
    either side, so the changed word of a long prompt is what the comment shows."""
    if len(old) <= limit and len(new) <= limit:
        return old, new
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    start = max(0, prefix - around)

    def cut(text: str) -> str:
        end = min(len(text), len(text) - suffix + around)
        return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")
    return cut(old), cut(new)


def _sides(change: FieldChange, limit: int) -> tuple[str, str]:
    old, new = change.old, change.new
    if isinstance(old, str) and isinstance(new, str):
        old, new = _context(old, new, limit)
    old_text = "(unset)" if change.kind == "added" else shorten(value_text(old), limit)
    new_text = "(unset)" if change.kind == "removed" else shorten(value_text(new), limit)
    return old_text, new_text


def field_text(change: FieldChange, *, limit: int = MAX_VALUE) -> str:
    """`path: old → new` as plain text (not escaped); long strings cut around the
    difference."""
    old, new = _sides(change, limit)
    return f"{change.path}: {old} → {new}"


def _field_md(change: FieldChange, limit: int = MAX_VALUE) -> str:
    old, new = _sides(change, limit)
    return f"<code>{escape(change.path)}</code>: {escape(old)} → {escape(new)}"


def _code(text: str) -> str:
    return f"<code>{escape(text)}</code>"


def _plan_command(review: Review) -> str:
    words = ["civflow", "plan", *(review.paths or ("PATH",))]
    if review.base_ref is not None:
        words += ["--base", review.base_ref]
    return shlex.join([*words, "--format", "json"])


def later(unpriced: int) -> str:
    return f" + {unpriced} at run time" if unpriced else ""


def _estimate_cell(p: PipelineReview) -> str:
    return f"{buzz(p.estimate)}{later(p.unpriced)}"


def cost_text(estimate: float, unpriced: int) -> str:
    """Buzz with what only the run can price beside it, never counted as 0."""
    later = f" + {unpriced} priced at run time" if unpriced else ""
    return f"{buzz(estimate)} Buzz{later}"


class Spend(Protocol):
    """The money of a review, a pipeline, or the report's sum of pipelines."""

    @property
    def delta(self) -> float: ...

    @property
    def unpriced(self) -> int: ...

    @property
    def base_spent(self) -> float: ...

    @property
    def paid_on_branch(self) -> float: ...


@dataclass(frozen=True)
class Totals:
    """The sum of several `Spend`s (the report's pipelines)."""

    delta: float = 0.0
    unpriced: int = 0
    base_spent: float = 0.0
    paid_on_branch: float = 0.0

    @classmethod
    def of(cls, items: Iterable[Spend]) -> Totals:
        listed = list(items)
        return cls(sum(i.delta for i in listed), sum(i.unpriced for i in listed),
                   sum(i.base_spent for i in listed), sum(i.paid_on_branch for i in listed))


def money(item: Spend, *, strong: bool = False) -> str:
    """The one money sentence of the terminal plan, the comment and the report: what
    merging costs, and beside it (never netted) what it replaces and what the branch
    already paid."""
    cost = f"merging costs {cost_text(item.delta, item.unpriced)}"
    parts = [f"**{cost}**" if strong else cost]
    if item.base_spent:
        parts.append(f"replaces {buzz(item.base_spent)} Buzz spent on the base")
    if item.paid_on_branch:
        parts.append(f"{buzz(item.paid_on_branch)} Buzz already paid on this branch")
    return " · ".join(parts)


# -- Markdown --------------------------------------------------------------------------


def _summary_line(review: Review) -> str:
    c = review.counts()
    against = (f"against {_code(review.base_ref)}"
               + (f" ({_code(review.base_commit[:12])})" if review.base_commit else "")
               if review.base_ref is not None else "(no base)")
    return (f"**{len(review.pipelines)} pipeline(s) {against}:** {c['changed']} changed, "
            f"{c['added']} added, {c['removed']} removed, {c['unchanged']} unchanged · "
            f"{money(review, strong=True)}")


def _pipeline_table(review: Review) -> list[str]:
    rows = ["| pipeline | file | status | changed | added | removed | unchanged "
            "| replaces (base spent) | merging costs |",
            "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    shown = reading_order(review.pipelines)
    for p in shown[:MAX_PIPELINE_ROWS]:
        c = p.counts()
        where = p.head_path or p.base_path or ""
        if p.status == "renamed" and p.base_path:
            where = f"{p.base_path} → {p.head_path}"
        rows.append(f"| {_code(p.name)} | {escape(where)} | {p.status} | {c['changed']} | "
                    f"{c['added']} | {c['removed']} | {c['unchanged']} | "
                    f"{buzz(p.base_spent)} | {_estimate_cell(p)} |")
    rest = shown[MAX_PIPELINE_ROWS:]
    if rest:
        counts: Counter[str] = Counter()
        for p in rest:
            counts.update(p.counts())
        rows.append(f"| … {len(rest)} more | | | {counts['changed']} | {counts['added']} | "
                    f"{counts['removed']} | {counts['unchanged']} | "
                    f"{buzz(sum(p.base_spent for p in rest))} | "
                    f"{buzz(sum(p.estimate for p in rest))}"
                    f"{later(sum(p.unpriced for p in rest))} |")
    c = review.counts()
    rows.append(f"| **total** | | | {c['changed']} | {c['added']} | {c['removed']} | "
                f"{c['unchanged']} | {buzz(review.base_spent)} | "
                f"**{buzz(review.delta)}{later(review.unpriced)}** |")
    return rows


def _core(old: str, new: str) -> tuple[str, str]:
    """The words that differ between two strings ('snow' / 'rain' in two prompts that
    are otherwise the same), marked with … where text was left out."""
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    while prefix > 0 and old[prefix - 1].isalnum():
        prefix -= 1  # whole words: "snow" -> "rain", not "sn" -> "ra"
    while suffix > 0 and old[len(old) - suffix].isalnum():
        suffix -= 1

    def cut(text: str) -> str:
        return ("…" if prefix else "") + text[prefix:len(text) - suffix] + \
            ("…" if suffix else "")
    return cut(old), cut(new)


def _patterns(changes: Sequence[InstanceChange]) -> list[str]:
    """The distinct edits of a step, most frequent first: a sweep's one edit reads as
    one line ('prompt: …snow… → …rain… ×10'), not as a row per instance."""
    counted: Counter[tuple[str, str, str]] = Counter()
    for inst in changes:
        for f in inst.fields:
            if f.kind == "changed" and isinstance(f.old, str) and isinstance(f.new, str):
                old, new = _core(f.old, f.new)
                key = (f.path, shorten(json.dumps(old, ensure_ascii=False), 60),
                       shorten(json.dumps(new, ensure_ascii=False), 60))
            else:
                old_text, new_text = _sides(f, 60)
                key = (f.path, old_text, new_text)
            counted[key] += 1
    lines = [f"- <code>{escape(path)}</code>: {escape(old)} → {escape(new)} ×{n:,}"
             for (path, old, new), n in counted.most_common(MAX_PATTERNS)]
    if len(counted) > MAX_PATTERNS:
        lines.append(f"- … {len(counted) - MAX_PATTERNS:,} more distinct edits")
    return lines


def _instance_row(inst: InstanceChange) -> str:
    parts = [_field_md(f) for f in inst.fields[:MAX_INSTANCE_FIELDS]]
    more = len(inst.fields) - MAX_INSTANCE_FIELDS + inst.more_fields
    if more > 0:
        parts.append(f"… {more} more field(s)")
    if inst.reasons and (not parts or inst.status == "changed"):
        # An upstream change is named by its instance, beside the fields edited here.
        parts.insert(0, escape(shorten("; ".join(inst.reasons), MAX_VALUE)))
    if inst.status == "removed":
        cost = f"was {buzz(inst.base_cost)}" if inst.base_cost is not None else ""
    elif inst.planned is not None and inst.runs:
        cost = buzz(inst.estimate) if inst.estimate is not None else "at run time"
    else:
        cost = "cached" if inst.planned is not None else ""
    return (f"| {_MARK[inst.status]} | {_code(inst.name)} | {inst.status} | "
            f"{'<br>'.join(parts)} | {cost} |")


_ROW_HEAD = ["| | instance | status | what changes | Buzz |", "|---|---|---|---|--:|"]


class _Budget:
    """Lines of the comment, refusing any that would take it past `limit`."""

    def __init__(self, limit: int) -> None:
        self.lines: list[str] = []
        self.size = 0
        self.limit = limit

    def fits(self, lines: Iterable[str]) -> bool:
        return self.size + sum(len(line) + 1 for line in lines) <= self.limit

    def add(self, *lines: str) -> None:
        for line in lines:
            self.lines.append(line)
            self.size += len(line) + 1


def markdown(review: Review, *, limit: int = MAX_COMMENT, report_url: str | None = None
             ) -> str:
    """The PR comment; at most `limit` characters whatever the size of the change.

    `report_url`: where the HTML report is (a CI artifact), linked after the summary and
    named in the truncation note. The caller checks it is a plain http(s) URL.
    """
    # Room kept for the closing lines and the truncation note, which always fit.
    reserve = 1_500
    out = _Budget(limit - reserve)
    out.add(MARKER, "### civflow plan", "", _summary_line(review), "")
    if report_url and not safe_url(report_url):
        report_url = None
    if report_url:
        out.add(f"[Open the review report (before / after images)]({report_url})", "")
    table = _pipeline_table(review)
    if out.fits(table):
        out.add(*table, "")
    else:
        out.add(f"_{len(review.pipelines)} pipelines: the table is too long for a comment._",
                "")
    notes = [*review.notes, *(n for p in review.pipelines for n in p.notes)]
    for note in notes[:10]:
        line = f"> {escape(shorten(note, 400))}"
        if out.fits([line]):
            out.add(line)
    if notes:
        out.add("")
    left_out = 0
    left_steps: list[str] = []
    total = 0
    for p in reading_order(review.pipelines):
        for step, changes in p.by_step().items():
            moved = [c for c in changes if c.status != "unchanged"]
            if not moved:
                continue
            total += len(moved)
            counts = Counter(c.status for c in moved)
            summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            cost = sum(c.estimate or 0.0 for c in moved if c.status != "removed")
            head = [f"<details><summary><b>{escape(p.name)}</b> · step {_code(step)}: "
                    f"{summary} · ~{buzz(cost)} Buzz</summary>", ""]
            patterns = _patterns(moved)
            opening = [*head, *patterns, *([""] if patterns else []), *_ROW_HEAD]
            closing = ["", "</details>", ""]
            if not out.fits([*opening, *closing]):
                left_out += len(moved)
                left_steps.append(f"{p.name}/{step}")
                continue
            out.add(*opening)
            shown = 0
            for inst in moved:
                row = _instance_row(inst)
                if not out.fits([row, *closing]):
                    break
                out.add(row)
                shown += 1
            if shown < len(moved):
                out.add(f"| | … | | {len(moved) - shown} more not listed here | |")
                left_out += len(moved) - shown
                left_steps.append(f"{p.name}/{step}")
            out.add(*closing)
    if total == 0:
        out.add("No instance changes." if review.base_ref is not None else
                "No base to compare with.", "")
    tail: list[str] = []
    where = _code(_plan_command(review))
    if report_url:
        where += f", or [the review report]({report_url})"
    if left_out:
        steps = ", ".join(shorten(s, 80) for s in left_steps[:5]) + (
            f" and {len(left_steps) - 5} more" if len(left_steps) > 5 else "")
        tail.append(f"**Truncated:** {left_out:,} of {total:,} changed instances are not "
                    f"listed (this comment stays under {limit:,} characters; steps: "
                    f"{escape(steps)}). The full plan: {where}.")
    else:
        tail.append(f"<sub>Full plan as JSON: {where}</sub>")
    text = "\n".join([*out.lines, *tail]) + "\n"
    if len(text) > limit:  # the reserve is generous; this is the last guard
        text = text[:limit - 2] + "\n"
    return text


# -- JSON ------------------------------------------------------------------------------


def _entry_json(entry: Any) -> dict[str, Any] | None:
    return entry.to_dict() if entry is not None else None


def _instance_json(inst: InstanceChange) -> dict[str, Any]:
    planned = inst.planned
    return {
        "instance": inst.name, "step": inst.step, "type": inst.type, "status": inst.status,
        "fields": [{"path": f.path, "kind": f.kind, "old": f.old, "new": f.new}
                   for f in inst.fields],
        "more_fields": inst.more_fields,
        "reasons": list(inst.reasons),
        "decision": inst.decision,
        "decision_reasons": list(planned.reasons) if planned is not None else [],
        "estimate": inst.estimate,
        "expected": planned.expected if planned is not None else None,
        "base_cost": inst.base_cost,
        "matrix": _json_safe(inst.matrix),
        "fingerprint": {
            "base": inst.base_planned.instance.fingerprint if inst.base_planned else None,
            "head": planned.instance.fingerprint if planned is not None else None},
        "base_entry": _entry_json(inst.base_entry),
        "head_entry": _entry_json(inst.head_entry),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _money(item: Review | PipelineReview) -> dict[str, Any]:
    return {"base_spent": item.base_spent, "estimate": item.estimate, "delta": item.delta,
            "unpriced": item.unpriced, "paid_on_branch": item.paid_on_branch}


def review_json(review: Review) -> str:
    """Every pipeline and instance of the review, whole values included.

    Top level: `schema` (1), `base` {`ref`, `commit`} (null without --base), `paths`,
    `counts` {added, removed, changed, unchanged}, `base_spent`, `estimate`, `delta` (what
    merging costs: the estimate, never netted against `base_spent`), `unpriced` (instances
    priced only at run time), `paid_on_branch`, `notes`, `pipelines`. Each pipeline:
    `name`, `status`, `head_path`, `base_path`, `counts`, the same money keys, `notes`,
    `instances`. Each instance: `instance`, `step`, `type`, `status`, `fields` [{`path`,
    `kind`, `old`, `new`}], `more_fields`, `reasons`, `decision`, `decision_reasons`,
    `estimate`, `expected`, `base_cost`, `matrix`, `fingerprint` {`base`, `head`},
    `base_entry`, `head_entry` (the lockfile entries, as the lockfile writes them).
    """
    document = {
        "schema": JSON_SCHEMA,
        "base": ({"ref": review.base_ref, "commit": review.base_commit}
                 if review.base_ref is not None else None),
        "paths": list(review.paths),
        "counts": review.counts(),
        **_money(review),
        "notes": list(review.notes),
        "pipelines": [{
            "name": p.name, "status": p.status, "head_path": p.head_path,
            "base_path": p.base_path, "counts": p.counts(), **_money(p),
            "notes": list(p.notes),
            "instances": [_instance_json(i) for i in p.instances],
        } for p in review.pipelines],
    }
    return json.dumps(_json_safe(document), indent=2, ensure_ascii=False) + "\n"


# -- text ------------------------------------------------------------------------------


def text(review: Review) -> str:
    """A terminal diff: per pipeline a summary line, then each instance that is not
    unchanged with its field changes (values shortened)."""
    c = review.counts()
    against = (f"against {review.base_ref} ({(review.base_commit or '')[:12]})"
               if review.base_ref is not None else "(no base)")
    lines = [f"plan {against}: {len(review.pipelines)} pipeline(s), {c['changed']} changed, "
             f"{c['added']} added, {c['removed']} removed, {c['unchanged']} unchanged; "
             f"{money(review)}"]
    lines += [f"note: {n}" for n in review.notes]
    for p in review.pipelines:
        pc = p.counts()
        where = p.head_path or p.base_path
        if p.status == "renamed":
            where = f"{p.base_path} -> {p.head_path}"
        lines.append("")
        lines.append(f"{where} ({p.name}): {p.status}; {pc['changed']} changed, "
                     f"{pc['added']} added, {pc['removed']} removed, {pc['unchanged']} "
                     f"unchanged; {money(p)}")
        lines += [f"  note: {n}" for n in p.notes]
        moved = [i for i in p.instances if i.status != "unchanged"]
        width = min(max((len(i.name) for i in moved), default=8), 60)
        for inst in moved:
            cost = ""
            if inst.status == "removed" and inst.base_cost is not None:
                cost = f"  (was {buzz(inst.base_cost)} Buzz)"
            elif inst.runs:
                cost = f"  (~{buzz(inst.estimate)} Buzz)" if inst.estimate is not None \
                    else "  (priced at run time)"
            lines.append(f"  {_MARK[inst.status]} {inst.name:<{width}}  {inst.status:<8}"
                         f"{cost}")
            if inst.reasons and inst.status == "changed":
                lines.append(f"      {'; '.join(inst.reasons)}")
            for f in inst.fields:
                lines.append(f"      {field_text(f)}")
            if inst.more_fields:
                lines.append(f"      … {inst.more_fields} more field(s)")
    return "\n".join(lines) + "\n"
