"""Read past runs back from their journals: `civflow status` and `civflow cancel`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from civflow.client.base import Backend
from civflow.errors import ApiNotFound, UsageError
from civflow.loading import read_source
from civflow.loading.model import project_root_for
from civflow.names import lockfile_path_for
from civflow.origin import Origin
from civflow.request import run_tag
from civflow.runner.state import runs_root
from civflow.store.journal import Journal, find_unfinished_run, pipeline_runs
from civflow.store.lockfile import Lockfile


def _pipeline(file: Path) -> tuple[str, Path]:
    """The pipeline's name (from its file) and its project root."""
    doc = read_source(file)
    name = doc.data.get("name")
    if not isinstance(name, str):
        raise UsageError(f"{file}: the pipeline has no name")
    return name, project_root_for(file)


def last_run_status(file: Path, fmt: str) -> str:
    """The latest run of the pipeline, against Civitai or (previews) the emulator."""
    name, root = _pipeline(file)
    latest = [(runs[0], origin) for origin in Origin
              if (runs := pipeline_runs(runs_root(root, origin), name))]
    if not latest:
        raise UsageError(f"{file}: no run recorded yet", hint=f"civflow run {file}")
    journal, origin = max(latest, key=lambda found: found[0].run_id)  # ids start with the time
    state = journal.state()
    lock = Lockfile.load(lockfile_path_for(file) if origin is Origin.CIVITAI
                         else root / ".civflow" / "previews" / f"{name}.lock.json")
    entries = dict(lock.instances) if lock else {}
    rows: list[dict[str, Any]] = []
    lock_dir = lockfile_path_for(file).parent
    for instance in [*state.instances, *(n for n in entries if state.get(n) is None)]:
        inst, entry = state.get(instance), entries.get(instance)
        if inst is None:
            status = "cached"
        else:
            status = inst.finished_status or ("submitted" if inst.workflow_id else "sent")
        fresh = entry is not None and (inst is None or entry.workflow_id == inst.workflow_id)
        rows.append({"instance": instance, "status": status,
                     "workflowId": inst.workflow_id if inst else entry.workflow_id if entry
                     else None,
                     "cost": inst.cost if inst else entry.cost if entry else None,
                     "artifacts": [_shown(lock_dir / a.path) for a in entry.artifacts]
                     if fresh and entry else []})
    summary = {"run": journal.run_id, "finished": state.finished, "madeBy": origin.value,
               "instances": rows}
    if fmt == "json":
        return json.dumps(summary, indent=2) + "\n"
    where = " on the emulator (previews, not paid work)" if origin is Origin.EMULATOR else ""
    lines = [f"run {journal.run_id} of {name}{where}: "
             f"{'finished' if state.finished else 'unfinished (civflow run resumes it)'}"]
    width = max((len(r["instance"]) for r in rows), default=8)
    for r in rows:
        cost = f"{r['cost']:g} Buzz" if r["cost"] is not None else ""
        lines.append(f"  {r['instance']:<{width}}  {r['status']:<13} {cost:>10}  "
                     f"{', '.join(r['artifacts'])}")
    return "\n".join(lines) + "\n"


def unfinished_run(file: Path) -> Journal | None:
    """The pipeline's latest run if it never finished (what `cancel` acts on)."""
    name, root = _pipeline(file)
    return find_unfinished_run(root / ".civflow" / "runs", name)


async def cancel_unfinished(journal: Journal, backend: Backend) -> list[str]:
    """Cancel every workflow the unfinished run submitted and never saw finish."""
    state = journal.state()
    targets = {i.workflow_id for i in state.instances.values()
               if i.workflow_id and i.finished_status is None}
    # Submissions whose answer never reached the journal are found by the run's tag.
    cursor: str | None = None
    while True:
        page, cursor = await backend.query(tags=[run_tag(journal.run_id)],
                                           cursor=cursor)
        targets |= {w.id for w in page if w.id and not w.is_terminal}
        if not cursor or not page:
            break

    async def one(workflow_id: str) -> str | None:
        try:
            await backend.cancel(workflow_id)
        except ApiNotFound:
            return None
        journal.append({"event": "canceled", "workflowId": workflow_id})
        return workflow_id
    done = [w for w in await asyncio.gather(*(one(w) for w in sorted(targets))) if w]
    for instance in state.instances.values():
        if instance.finished_status is None:
            journal.append({"event": "settled", "instance": instance.instance,
                            "status": "canceled", "fingerprint": instance.fingerprint})
    journal.append({"event": "run-finished", "status": "canceled"})
    return done


def _shown(path: Path) -> str:
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(resolved)
