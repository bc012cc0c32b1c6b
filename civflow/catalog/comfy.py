"""ComfyUI workflows exported in API format, with node inputs set by node title.

A `comfy` step carries a whole ComfyUI graph (`comfyWorkflow`: node id → node). Users
export that graph from ComfyUI ("Save (API format)") into a file next to the pipeline
and want to change a few inputs without knowing ComfyUI's numeric node ids, so a
pipeline names nodes by the title shown in ComfyUI (`_meta.title`):

    type: comfy
    input:
      workflow: portrait.api.json
      set:
        Positive prompt: {text: "{{ subject }}"}
        KSampler: {seed: 42, steps: 20}

`read_workflow` reads such a file (bounded in size and nodes, never outside the
pipeline's folder), `apply_titles` sets the inputs and reports every unknown title or
input as a `ComfyIssue` located by its path under `set`, with a did-you-mean, and
`comfy_input` writes the document's `ComfyInput` body (`classType`, `inputs`, `meta`).
Values are set after template rendering, so `{{ … }}` works as anywhere else.
Pure functions: the caller (pipeline check, request building) decides what to do.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bounds on what a workflow file may hold; ComfyUI graphs are a few hundred nodes at most.
MAX_WORKFLOW_BYTES = 4 * 1024 * 1024
MAX_NODES = 5000

Workflow = dict[str, dict[str, Any]]


class ComfyWorkflowError(ValueError):
    """A workflow file that cannot be used: unreadable, outside the folder, or not API format."""


@dataclass(frozen=True)
class ComfyIssue:
    """One unknown title or input under `set`: where (path), what, and the close matches."""

    path: tuple[str, ...]
    message: str
    hint: str | None = None
    suggestions: tuple[str, ...] = ()


def read_workflow(folder: Path, name: str) -> Workflow:
    """The API-format workflow in `folder/name`; the file must lie inside `folder`."""
    root = folder.resolve()
    target = (root / name).resolve()
    if Path(name).is_absolute() or not target.is_relative_to(root):
        raise ComfyWorkflowError(f"workflow file {name!r} is outside the pipeline's folder")
    try:
        with target.open("rb") as handle:
            raw = handle.read(MAX_WORKFLOW_BYTES + 1)
    except OSError as exc:
        raise ComfyWorkflowError(f"cannot read workflow file {name!r}: {exc.strerror}") from exc
    if len(raw) > MAX_WORKFLOW_BYTES:
        raise ComfyWorkflowError(f"workflow file {name!r} is larger than "
                                 f"{MAX_WORKFLOW_BYTES // (1024 * 1024)} MiB")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ComfyWorkflowError(f"workflow file {name!r} is not JSON: {exc}") from exc
    return parse_workflow(data, name)


def parse_workflow(data: object, name: str = "workflow") -> Workflow:
    """Check the API-format shape: an object of node id → {class_type, inputs, _meta?}."""
    if isinstance(data, Mapping) and "nodes" in data and "links" in data:
        raise ComfyWorkflowError(f"{name!r} is a ComfyUI UI workflow; export it with "
                                 "'Save (API format)' instead")
    if not isinstance(data, Mapping) or not data:
        raise ComfyWorkflowError(f"{name!r} is not a ComfyUI API-format workflow "
                                 "(an object of node id → node)")
    if len(data) > MAX_NODES:
        raise ComfyWorkflowError(f"{name!r} has more than {MAX_NODES} nodes")
    out: Workflow = {}
    for node_id, node in data.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs"), Mapping):
            raise ComfyWorkflowError(f"node {node_id!r} of {name!r} lacks class_type or inputs")
        out[str(node_id)] = dict(node)
    return out


def _title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) else None


def titles(workflow: Workflow) -> dict[str, list[str]]:
    """Each node title → the ids of the nodes carrying it (more than one is ambiguous)."""
    found: dict[str, list[str]] = {}
    for node_id, node in workflow.items():
        title = _title(node)
        if title is not None:
            found.setdefault(title, []).append(node_id)
    return found


def _close(word: str, choices: list[str]) -> tuple[str, ...]:
    folded = {c.casefold(): c for c in choices}
    if word.casefold() in folded:
        return (folded[word.casefold()],)
    return tuple(difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6))


def apply_titles(workflow: Workflow, overrides: Mapping[str, object]
                 ) -> tuple[Workflow, list[ComfyIssue]]:
    """A copy of `workflow` with `overrides` (title → {input: value}) set, and the issues."""
    out = copy.deepcopy(workflow)
    issues: list[ComfyIssue] = []
    known = titles(workflow)
    for title, inputs in overrides.items():
        where = ("set", str(title))
        ids = known.get(str(title))
        if not ids:
            close = _close(str(title), sorted(known))
            issues.append(ComfyIssue(
                where, f"the workflow has no node titled {title!r}",
                f"did you mean {close[0]!r}?" if close else
                "titles: " + ", ".join(sorted(known)) if known else
                "give the node a title in ComfyUI (right-click → Title)", close))
            continue
        if len(ids) > 1:
            issues.append(ComfyIssue(where, f"{len(ids)} nodes are titled {title!r} "
                                            f"(ids {', '.join(sorted(ids))})",
                                     "give each node a distinct title in ComfyUI"))
            continue
        if not isinstance(inputs, Mapping):
            issues.append(ComfyIssue(where, f"the inputs to set on {title!r} must be an "
                                            "object of input name → value"))
            continue
        node = out[ids[0]]
        current: dict[str, Any] = dict(node["inputs"])
        for input_name, value in inputs.items():
            path = (*where, str(input_name))
            if input_name not in current:
                close = _close(str(input_name), sorted(current))
                issues.append(ComfyIssue(
                    path, f"node {title!r} ({node['class_type']}) has no input {input_name!r}",
                    f"did you mean {close[0]!r}?" if close else
                    "its inputs: " + ", ".join(sorted(current)), close))
                continue
            if isinstance(current[input_name], list):
                issues.append(ComfyIssue(
                    path, f"input {input_name!r} of {title!r} is wired to another node",
                    "set the input of the node it is wired from instead"))
                continue
            current[input_name] = value
        node["inputs"] = current
    return out, issues


def _link(value: object) -> object:
    """ComfyUI writes a link as ["4", 0]; the document types it as two numbers: [4, 0]."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) \
            and value[0].isdigit():
        return [int(value[0]), value[1]]
    return value


def comfy_input(workflow: Workflow, **options: Any) -> dict[str, Any]:
    """The `ComfyInput` body of the document: `comfyWorkflow` plus options (quantity…)."""
    nodes: dict[str, Any] = {}
    for node_id, node in workflow.items():
        inputs = {k: _link(v) for k, v in node["inputs"].items()}
        entry: dict[str, Any] = {"classType": node["class_type"], "inputs": inputs}
        title = _title(node)
        if title is not None:
            entry["meta"] = {"title": title}
        nodes[node_id] = entry
    return {"comfyWorkflow": nodes, **{k: v for k, v in options.items() if v is not None}}
