"""What goes over the wire for an instance: its WorkflowTemplate, and outputs as content tokens.

Inside civflow a blob is named by the sha256 of its content (`civflow-blob:sha256:…`),
so cache keys never contain presigned URLs; only at submission are tokens replaced by
URLs valid right then (`civflow.runner.blobs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from civflow.check.render import resolve_pending
from civflow.expand import Instance
from civflow.loading.model import PipelineSpec
from civflow.names import URL_FIELDS
from civflow.producers import BLOB_TOKEN

__all__ = [
    "BLOB_TOKEN",
    "CIVFLOW_TAG",
    "batch_body",
    "run_tag",
    "set_tag",
    "tokenize_output",
    "workflow_body",
    "workflow_step",
]

CIVFLOW_TAG = "civflow"


def run_tag(run_id: str | None) -> str:
    return f"{CIVFLOW_TAG}-run:{run_id}" if run_id else f"{CIVFLOW_TAG}-run:<pending: run.id>"


def tokenize_output(output: Mapping[str, Any], sha_by_blob: Mapping[str, str]) -> dict[str, Any]:
    """An output with every blob URL replaced by a content token (and expiry fields dropped)."""
    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            blob_id = value.get("id")
            out = {k: walk(v) for k, v in value.items() if k not in URL_FIELDS}
            if isinstance(blob_id, str) and blob_id in sha_by_blob:
                out["url"] = BLOB_TOKEN + sha_by_blob[blob_id]
            return out
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    result: dict[str, Any] = walk(output)
    return result


def workflow_body(spec: PipelineSpec, inst: Instance, *, run_id: str | None,
                  external_id: str | None, input_override: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The WorkflowTemplate civflow submits for one instance."""
    step = workflow_step(inst, inst.step, input_override)
    tags = [*spec.tags, f"{CIVFLOW_TAG}:{spec.name}", run_tag(run_id)]
    body: dict[str, Any] = {"steps": [step], "tags": tags, "currencies": []}
    for key, value in spec.workflow.items():
        if key != "priority":
            body[key] = value
    metadata = dict(body.get("metadata") or {})
    metadata["civflow"] = {"pipeline": spec.name, "instance": inst.name}
    body["metadata"] = metadata
    if external_id is not None:
        body["externalId"] = external_id
    return body


def workflow_step(inst: Instance, name: str,
                  input_override: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One instance's step of a WorkflowTemplate, named `name`."""
    step: dict[str, Any] = {"$type": inst.type, "name": name,
                            "input": resolve_pending(input_override or inst.input)}
    step.update(inst.options)
    return step


def set_tag(pipeline: str, step: str, fingerprints: Iterable[str]) -> str:
    """The tag of every workflow that carries instances of one step as the pipeline now
    defines it (its instances' fingerprints, cached or not): the same on every clone, so
    a clone finds the work another clone already submitted for it before paying."""
    text = "\n".join([pipeline, step, *sorted(set(fingerprints))])
    return f"{CIVFLOW_TAG}-set:{hashlib.sha256(text.encode('utf-8')).hexdigest()[:40]}"


def batch_body(spec: PipelineSpec, members: Sequence[tuple[Instance, Mapping[str, Any] | None]],
               *, run_id: str | None, external_id: str | None,
               keys: Sequence[str] | None = None, lookup: str | None = None) -> dict[str, Any]:
    """The WorkflowTemplate of one or more instances: one step each, named after its
    instance (so its result is found by name), the rest as for one instance. `keys`
    (each member's own idempotency key) and `lookup` (its step's `set_tag`) let another
    clone recognise the members it would otherwise pay for again."""
    if not members:
        raise ValueError("a batch has at least one member")
    first, override = members[0]
    body = workflow_body(spec, first, run_id=run_id, external_id=external_id,
                         input_override=override)
    body["steps"] = [workflow_step(inst, inst.name, input_override)
                     for inst, input_override in members]
    body["metadata"]["civflow"] = {"pipeline": spec.name,
                                   "instances": [inst.name for inst, _ in members]}
    if keys is not None:
        body["metadata"]["civflow"]["keys"] = list(keys)
    if lookup is not None:
        body["tags"].append(lookup)
    return body
