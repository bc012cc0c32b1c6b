"""The emulator's answers: its workflows, steps and blobs as the JSON the API sends."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from civflow.emulator._blobs import BlobStore
from civflow.emulator._config import EmulatorConfig
from civflow.emulator._ids import iso
from civflow.emulator._model import TERMINAL, Step, Workflow


def _holds_blob(value: Any) -> bool:
    """Whether an output tree holds a `{"$blob": id}` marker (rendered anew each time)."""
    if isinstance(value, dict):
        return set(value) == {"$blob"} or any(_holds_blob(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_blob(v) for v in value)
    return False


class Views:
    """Renders workflows, steps and blobs as the JSON the API answers with."""

    def __init__(self, config: EmulatorConfig, blobs: BlobStore,
                 now: Callable[[], float]) -> None:
        self._config = config
        self._blobs = blobs
        self._now = now  # the event loop's clock, which times processing (for progress)

    def blob_json(self, blob_id: str, base: str) -> dict[str, Any]:
        info = self._blobs.info(blob_id)
        if info is None:
            # Forgotten through the admin API: what the real service shows for a lost blob.
            return {"type": "image", "id": blob_id, "available": False}
        url, expires = self._blobs.signed_url(base, blob_id, self._config.url_lifetime_seconds)
        out: dict[str, Any] = {"type": info.kind, "id": info.id, "available": True, "url": url,
                               "urlExpiresAt": expires, "jobId": info.job_id,
                               "nsfwLevel": "pg"}
        if info.width is not None:
            out["width"], out["height"] = info.width, info.height
        if info.kind == "model3d":  # the document requires a 3D blob's file format
            out["format"] = info.id.rsplit(".", 1)[-1]
        return out

    def _with_blobs(self, value: Any, base: str) -> Any:
        if isinstance(value, dict):
            if set(value) == {"$blob"}:
                return self.blob_json(value["$blob"], base)
            return {k: self._with_blobs(v, base) for k, v in value.items()}
        if isinstance(value, list):
            return [self._with_blobs(v, base) for v in value]
        return value

    def render_step(self, workflow: Workflow, step: Step, base: str,
                    outputs: bool) -> dict[str, Any]:
        if step.view is not None:
            # A finished step never changes again, except its metadata and its blobs' URLs.
            out = dict(step.view)
            out["metadata"] = step.metadata
        else:
            out = self._step_view(step)
            if step.status in TERMINAL:
                step.view = dict(out)
                step.plain = not _holds_blob(step.output)
        if outputs and step.output is not None:
            out["output"] = step.output if step.plain else self._with_blobs(step.output, base)
        return out

    def _step_view(self, step: Step) -> dict[str, Any]:
        out: dict[str, Any] = {"$type": step.type, "name": step.name, "priority": step.priority}
        if step.timeout is not None:
            out["timeout"] = step.timeout
        if step.retries is not None:
            out["retries"] = step.retries
        progress = None
        if step.status == "processing" and step.proc_end > step.proc_start:
            progress = min(1.0, (self._now() - step.proc_start) /
                           (step.proc_end - step.proc_start))
        elif step.status == "processing":
            progress = 1.0
        jobs = []
        for job in step.jobs:
            entry = {k: v for k, v in job.items() if v is not None}
            if job["status"] not in TERMINAL:
                entry["queuePosition"] = {"support": "available", "precedingJobs": 0}
                entry["estimatedProgressRate"] = progress if progress is not None else 0.0
            jobs.append(entry)
        out.update({"jobs": jobs, "status": step.status,
                    "startedAt": iso(step.started_at) if step.started_at else None,
                    "completedAt": iso(step.completed_at) if step.completed_at else None,
                    "metadata": step.metadata, "estimatedProgressRate": progress,
                    "input": step.input})
        return out

    def render(self, workflow: Workflow, base: str, outputs: bool = True) -> dict[str, Any]:
        body = workflow.body
        out: dict[str, Any] = {
            "id": workflow.id,
            "createdAt": iso(workflow.created_at),
            "transactions": workflow.transactions,
            "metadata": body.get("metadata") or {},
            "status": workflow.status,
            "startedAt": iso(workflow.started_at) if workflow.started_at else None,
            "completedAt": iso(workflow.completed_at) if workflow.completed_at else None,
            "tags": body.get("tags") or [],
            "arguments": body.get("arguments") or {},
            "steps": [self.render_step(workflow, s, base, outputs) for s in workflow.steps],
            "callbacks": body.get("callbacks") or [],
            "tips": body.get("tips") or {"civitai": 0, "creators": 0},
            "cost": workflow.cost,
            "upgradeMode": body.get("upgradeMode") or "manual",
            "currencies": body.get("currencies") or [],
            "forceRefunded": False,
        }
        for key in ("nsfwLevel", "experimental", "allowMatureContent", "ephemeral",
                    "externalId"):
            if body.get(key) is not None:
                out[key] = body[key]
        return out
