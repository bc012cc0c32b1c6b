"""Turn validation results, plans and graphs into text, JSON, Markdown, GitHub annotations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from civflow.check import Checked
from civflow.errors import CivflowError, Diagnostic, PipelineInvalid
from civflow.loading.model import PipelineSpec
from civflow.names import markdown_text as escape
from civflow.names import shown
from civflow.planning import Decision, Plan, PlannedInstance
from civflow.store.lockfile import Lockfile

if TYPE_CHECKING:
    from civflow.grouping import Batch
    from civflow.review.diff import Review

_MARK = {Decision.NEW: "+", Decision.CHANGED: "~", Decision.FORCED: "!",
         Decision.CACHED: "=", Decision.SKIPPED: "-", Decision.LOST: "+",
         Decision.FAILED: "x"}


def file_result(path: Path, diagnostics: Sequence[Diagnostic], *,
                checked: Checked | None = None) -> dict[str, Any]:
    return {"file": str(path), "valid": checked is not None,
            "steps": len(checked.spec.steps) if checked else None,
            "diagnostics": list(diagnostics)}


def file_failure(path: Path, exc: CivflowError) -> dict[str, Any]:
    diags = exc.diagnostics if isinstance(exc, PipelineInvalid) else (
        Diagnostic(exc.message, None, exc.hint),)
    return {"file": str(path), "valid": False, "steps": None, "diagnostics": list(diags),
            "failure": exc.render()}


def _diag_json(d: Diagnostic) -> dict[str, Any]:
    loc = d.location
    return {"severity": d.severity.value, "message": d.message, "hint": d.hint,
            "file": loc.file if loc else None, "line": loc.line if loc else None,
            "col": loc.col if loc else None}


def _escape_github(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def validation(results: Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([{**r, "diagnostics": [_diag_json(d) for d in r["diagnostics"]]}
                           for r in results], indent=2) + "\n"
    lines: list[str] = []
    for r in results:
        for d in r["diagnostics"]:
            if fmt == "github":
                kind = "error" if d.is_error else "warning"
                where = (f" file={d.location.file},line={d.location.line},col={d.location.col}"
                         if d.location else f" file={r['file']}")
                text = d.message + (f" (hint: {d.hint})" if d.hint else "")
                lines.append(f"::{kind}{where}::{_escape_github(text)}")
            elif "failure" in r and d.location is None:
                lines.append(f"{r['file']}: {r['failure']}")
            else:
                lines.append(d.render())
        if fmt == "text" and r["valid"]:
            lines.append(f"{r['file']}: ok ({r['steps']} steps)")
    return "\n".join(lines) + ("\n" if lines else "")


def _buzz(value: float | None) -> str:
    if value is None:
        return "priced at run time"
    return f"{value:,.0f}" if value >= 10 else f"{value:,.2f}".rstrip("0").rstrip(".")


def _summary(p: Plan) -> str:
    counts: dict[str, int] = {}
    for i in p.instances:  # instances the run will have: a sized fan-out counts its size
        if i.sized:
            counts[i.decision.value] = counts.get(i.decision.value, 0) + i.expected
    runs = sum(i.expected for i in p.instances if i.decision.runs and i.sized)
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    known = sum(i.expected for i in p.instances if i.sized)
    open_ = sum(1 for i in p.instances if not i.sized)
    # What the run's summary will add up to: a fan-out's size is known when the upstream
    # quantity fixes it; otherwise only its number of fan-outs is.
    count = f"{known} instances" if not open_ else \
        f"{known} known + {open_} fan-out{'s' if open_ > 1 else ''} sized at run time"
    unpriced = len(p.unpriced)
    later = f" + {unpriced} priced at run time" if unpriced else ""
    retry = any(i.decision is Decision.FAILED and "--retry-failed" in " ".join(i.reasons)
                for i in p.instances)
    hint = "; --retry-failed sends the failed ones again" if retry else ""
    return (f"{p.pipeline}: {count}, {runs} to run ({parts}); "
            f"estimated {_buzz(p.estimate)} Buzz{later}{hint}")


def _estimate_text(i: PlannedInstance) -> str:
    if not i.decision.runs:
        return ""
    if i.estimate is None:
        return "priced at run time"
    each = (f" each, {i.expected} expected" if i.expected > 1 else " each") \
        if i.instance.fanout else ""
    return f"~{_buzz(i.estimate)} Buzz{each}"


def plan(p: Plan, fmt: str, workflows: Sequence[Batch] = (), *, brief: bool = False) -> str:
    """The plan as text, JSON or Markdown. Steps marked `unchecked: true` (sent as
    written) are flagged, so a reviewer sees what civflow did not check. `workflows`
    (with `batch` above 1) says which instances share a workflow and which are fused.
    `brief` (text): cached instances are one line, as `run` shows its plan."""
    unchecked = p.unchecked
    if fmt == "json":
        document: dict[str, Any] = {
            "pipeline": p.pipeline, "estimate": p.estimate, "counts": p.counts(),
            "instances": [{"instance": i.name, "step": i.instance.step,
                           "type": i.instance.type, "decision": i.decision.value,
                           "reasons": list(i.reasons), "estimate": i.estimate,
                           "fingerprint": i.instance.fingerprint,
                           "fanout": i.instance.fanout, "expected": i.expected,
                           "unchecked": i.instance.step in unchecked} for i in p.instances]}
        if workflows:
            document["workflows"] = [{"members": list(b.members), "fused": list(b.fused)}
                                     for b in workflows]
        return json.dumps(document, indent=2) + "\n"
    shared = "".join(_workflow_line(n, b, fmt) for n, b in enumerate(workflows, 1))
    if shared:
        shared = ("\n" if fmt == "markdown" else "") + \
            f"{len(workflows)} workflow(s) to submit:\n" + shared
    if fmt == "markdown":
        rows = [f"### civflow plan: `{p.pipeline}`", "", _summary(p), "",
                "| | instance | type | decision | why | estimate |",
                "|---|---|---|---|---|---|"]
        for i in p.instances:
            why = escape("; ".join(i.reasons)) + \
                (" (unchecked)" if i.instance.step in unchecked else "")
            rows.append(f"| {_MARK[i.decision]} | <code>{escape(i.name)}</code> | "
                        f"{escape(i.instance.type)} | {i.decision.value} | {why} | "
                        f"{_estimate_text(i)} |")
        return "\n".join(rows) + "\n" + shared
    listed = [i for i in p.instances if not (brief and i.decision is Decision.CACHED)]
    width = max((len(shown(i.name)) for i in listed), default=8)
    lines = [_summary(p)]
    if len(listed) < len(p.instances):
        lines.append(f"  = {len(p.instances) - len(listed)} cached: fingerprint matches the "
                     "lockfile (-v lists them)")
    for i in listed:
        lines.append(f"  {_MARK[i.decision]} {shown(i.name):<{width}}  {i.decision.value:<8}  "
                     f"{shown('; '.join(i.reasons))}"
                     + (f"  ({_estimate_text(i)})" if i.decision.runs else "")
                     + ("  [unchecked]" if i.instance.step in unchecked else ""))
    return "\n".join(lines) + "\n" + shared


def _workflow_line(number: int, batch: Batch, fmt: str) -> str:
    names = ", ".join(f"<code>{escape(n)}</code>" if fmt == "markdown" else shown(n)
                      for n in batch.members)
    fused = f" (fused by $ref: {shown(', '.join(batch.fused))})" if batch.fused else ""
    return f"{'- ' if fmt == 'markdown' else '  '}workflow {number}: {names}{fused}\n"


def graph(checked: Checked, fmt: str) -> str:
    spec, g = checked.spec, checked.graph
    def label(name: str) -> str:
        step = spec.steps[name]
        shown = f"{name}[*]" if step.fans_out else name
        return f"{shown}\\n{step.type}" if fmt == "dot" else f"{shown}<br/>{step.type}"
    if fmt == "dot":
        lines = [f'digraph "{spec.name}" {{', "  rankdir=LR;", "  node [shape=box];"]
        lines += [f'  "{n}" [label="{label(n)}"];' for n in g.order]
        lines += [f'  "{a}" -> "{b}";' for a, b in sorted(g.graph.edges)]
        lines.append("}")
    else:
        lines = ["flowchart LR"]
        lines += [f'  {n}["{label(n)}"]' for n in g.order]
        lines += [f"  {a} --> {b}" for a, b in sorted(g.graph.edges)]
    return "\n".join(lines) + "\n"


def vars_note(spec: PipelineSpec, lock: Lockfile | None, lock_path: Path) -> str:
    """What vars the plan and the lockfile stand for, when that is not simply the file."""
    lines = []
    shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(spec.overrides.items()))
    if "previews" in lock_path.parts:
        lines.append(f"note: planned for the emulator: only its own previews count as done, "
                     f"recorded in {lock_path.name} under .civflow/previews, never in the "
                     "committed lockfile")
    elif lock_path != spec.lockfile_path:
        lines.append(f"note: one-off vars ({shown}): a run records its results in "
                     f"{lock_path.name} under .civflow/locks, not in the committed lockfile "
                     "(run --update-lockfile to change that)")
    elif lock is not None and lock.vars and dict(lock.vars) != dict(spec.overrides):
        made = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(lock.vars.items()))
        lines.append(f"note: the lockfile was made with vars {made}")
    return "".join(f"{line}\n" for line in lines)


def safe_url(url: str) -> bool:
    """An http(s) URL that cannot break out of a Markdown link."""
    from civflow.review.comment import safe_url as check

    return check(url)


def review(r: Review, fmt: str, *, report_url: str | None = None) -> str:
    """`plan --base`: the review as a PR comment (markdown), JSON, or a terminal diff
    (see civflow.review.comment)."""
    from civflow.review import comment

    if fmt == "json":
        return comment.review_json(r)
    if fmt == "markdown":
        return comment.markdown(r, report_url=report_url)
    return comment.text(r)
