"""Read past runs back from their journals: `civflow status` and `civflow cancel`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from civflow.backends.base import Backend
from civflow.errors import ApiNotFound, UsageError
from civflow.run.state import project_root_for
from civflow.spec import read_source
from civflow.store.journal import Journal, _runs, find_unfinished_run
from civflow.store.lockfile import Lockfile, lockfile_path_for


def _pipeline(file: Path) -> tuple[str, Path]:
    """The pipeline's name (from its file) and its project root."""
    doc = read_source(file)
    name = doc.data.get("name")
    if not isinstance(name, str):
        raise UsageError(f"{file}: the pipeline has no name")
    return name, project_root_for(file)


def last_run_status(file: Path, fmt: str) -> str:
    name, root = _pipeline(file)
    runs = _runs(root / ".civflow" / "runs", name)
    if not runs:
        raise UsageError(f"{file}: no run recorded yet", hint=f"civflow run {file}")
    journal = runs[0]
    state = journal.state()
    lock = Lockfile.load(lockfile_path_for(file))
    rows: list[dict[str, Any]] = []
    for inst in state.instances.values():
        entry = lock.instances.get(inst.instance) if lock else None
        status = inst.finished_status or ("submitted" if inst.workflow_id else "not submitted")
        rows.append({"instance": inst.instance, "status": status,
                     "workflowId": inst.workflow_id, "cost": inst.cost,
                     "artifacts": [a.path for a in entry.artifacts] if entry and
                     entry.workflow_id == inst.workflow_id else []})
    cached = [n for n in (lock.instances if lock else {}) if state.get(n) is None]
    summary = {"run": journal.run_id, "finished": state.finished, "instances": rows,
               "cached": sorted(cached)}
    if fmt == "json":
        return json.dumps(summary, indent=2) + "\n"
    lines = [f"run {journal.run_id} of {name}: "
             f"{'finished' if state.finished else 'unfinished (civflow run resumes it)'}"]
    width = max((len(r["instance"]) for r in rows), default=8)
    for r in rows:
        cost = f"{r['cost']:g} Buzz" if r["cost"] is not None else ""
        lines.append(f"  {r['instance']:<{width}}  {r['status']:<13} {cost:>10}  "
                     f"{', '.join(r['artifacts'])}")
    if cached:
        lines.append(f"  cached from earlier runs: {len(cached)} instance(s)")
    return "\n".join(lines) + "\n"


async def cancel_unfinished(file: Path, backend: Backend) -> list[str]:
    """Cancel every workflow the latest unfinished run submitted and never saw finish."""
    name, root = _pipeline(file)
    journal: Journal | None = find_unfinished_run(root / ".civflow" / "runs", name)
    if journal is None:
        return []
    state = journal.state()
    targets = [i.workflow_id for i in state.instances.values()
               if i.workflow_id and i.finished_status is None]

    async def one(workflow_id: str) -> str | None:
        try:
            await backend.cancel(workflow_id)
        except ApiNotFound:
            return None
        journal.append({"event": "canceled", "workflowId": workflow_id})
        return workflow_id
    done = [w for w in await asyncio.gather(*(one(w) for w in targets)) if w]
    journal.append({"event": "run-finished", "status": "canceled"})
    return done
