"""ComfyUI API-format workflows with inputs set by node title (civflow.catalog.comfy).

Promises (issue 11): a node is named by its ComfyUI title, never its numeric id; an
unknown title or input is a located issue with a did-you-mean; the body sent is one
the catalog (and the official document) accepts; a workflow file is read only inside
the pipeline's folder, bounded in size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from civflow.catalog import check_input
from civflow.catalog.comfy import (
    MAX_WORKFLOW_BYTES,
    ComfyWorkflowError,
    apply_titles,
    comfy_input,
    parse_workflow,
    read_workflow,
)
from tests.openapi_support import require_openapi

API_FORMAT: dict[str, Any] = {
    "3": {"class_type": "KSampler", "_meta": {"title": "KSampler"},
          "inputs": {"seed": 1, "steps": 20, "cfg": 7, "model": ["4", 0],
                     "positive": ["6", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "_meta": {"title": "Load Checkpoint"},
          "inputs": {"ckpt_name": "sdxl.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "_meta": {"title": "Positive prompt"},
          "inputs": {"text": "a cat", "clip": ["4", 1]}},
}


def test_inputs_are_set_by_title_and_the_body_is_valid() -> None:
    workflow = parse_workflow(API_FORMAT)
    changed, issues = apply_titles(workflow, {"Positive prompt": {"text": "a red fox"},
                                              "KSampler": {"seed": 42}})
    assert issues == []
    assert changed["6"]["inputs"]["text"] == "a red fox"
    assert changed["3"]["inputs"]["seed"] == 42
    assert workflow["6"]["inputs"]["text"] == "a cat"  # the original is untouched
    body = comfy_input(changed, quantity=1)
    assert body["comfyWorkflow"]["6"] == {"classType": "CLIPTextEncode",
                                          "inputs": {"text": "a red fox", "clip": [4, 1]},
                                          "meta": {"title": "Positive prompt"}}
    assert check_input("comfy", body) == []


def test_the_document_accepts_the_body() -> None:
    api = require_openapi()
    body = comfy_input(parse_workflow(API_FORMAT))
    template = {"steps": [{"$type": "comfy", "input": body}], "currencies": []}
    assert api.errors("WorkflowTemplate", template) == []


def test_unknown_title_and_input_are_located_with_a_did_you_mean() -> None:
    workflow = parse_workflow(API_FORMAT)
    _, issues = apply_titles(workflow, {"Positive promt": {"text": "x"},
                                        "KSampler": {"sed": 3, "model": "x"}})
    assert [(i.path, i.suggestions) for i in issues] == [
        (("set", "Positive promt"), ("Positive prompt",)),
        (("set", "KSampler", "sed"), ("seed",)),
        (("set", "KSampler", "model"), ()),
    ]
    assert issues[0].message == "the workflow has no node titled 'Positive promt'"
    assert issues[0].hint == "did you mean 'Positive prompt'?"
    assert issues[1].message == "node 'KSampler' (KSampler) has no input 'sed'"
    assert issues[2].message == "input 'model' of 'KSampler' is wired to another node"


def test_duplicate_titles_are_ambiguous() -> None:
    twice = {**API_FORMAT, "7": {**API_FORMAT["6"]}}
    _, issues = apply_titles(parse_workflow(twice), {"Positive prompt": {"text": "x"}})
    assert [i.message for i in issues] == ["2 nodes are titled 'Positive prompt' (ids 6, 7)"]


def test_ui_format_and_non_workflows_are_refused() -> None:
    with pytest.raises(ComfyWorkflowError, match="Save \\(API format\\)"):
        parse_workflow({"nodes": [], "links": []})
    with pytest.raises(ComfyWorkflowError, match="lacks class_type"):
        parse_workflow({"1": {"inputs": {}}})


def test_a_workflow_file_stays_inside_the_folder_and_is_bounded(tmp_path: Path) -> None:
    (tmp_path / "flow.json").write_text(json.dumps(API_FORMAT), encoding="utf-8")
    assert read_workflow(tmp_path, "flow.json")["4"]["class_type"] == "CheckpointLoaderSimple"
    (tmp_path.parent / "outside.json").write_text(json.dumps(API_FORMAT), encoding="utf-8")
    for name in ("../outside.json", str(tmp_path.parent / "outside.json")):
        with pytest.raises(ComfyWorkflowError, match="outside"):
            read_workflow(tmp_path, name)
    (tmp_path / "big.json").write_bytes(b" " * (MAX_WORKFLOW_BYTES + 1))
    with pytest.raises(ComfyWorkflowError, match="larger"):
        read_workflow(tmp_path, "big.json")
    with pytest.raises(ComfyWorkflowError, match="cannot read"):
        read_workflow(tmp_path, "missing.json")
