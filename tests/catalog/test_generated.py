"""The generated catalog walks every variant of the official document (skipped without it).

Promises (issue 11): the committed data is what scripts/gen_catalog.py makes of the
document (`--check`); it copies no prose; for every step type and every discriminated
input variant, the document itself accepts the generated minimal body, civflow's
catalog accepts it, and dropping any required field is rejected by both.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from civflow import catalog
from civflow.catalog._spec import DATA, generated_variants
from tests.openapi_support import OPENAPI_PATH, OpenApi, require_openapi, skip_without_openapi

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "gen_catalog.py"
VARIANTS = generated_variants()
# Keywords of the document that carry prose or examples: none may reach the generated file.
PROSE = ("description", "summary", "title", "example", "examples", "x-", "deprecated")


def _id(variant: catalog.Variant) -> str:
    return "-".join([variant.step_type, *variant.discriminators.values()])


def _template(step_type: str, step_input: object) -> dict[str, Any]:
    return {"steps": [{"$type": step_type, "input": step_input}], "currencies": []}


@pytest.fixture(scope="module")
def api() -> OpenApi:
    return require_openapi()


def test_committed_data_is_current() -> None:
    """`gen_catalog.py --check` passes: the committed data matches the document."""
    skip_without_openapi()
    result = subprocess.run([sys.executable, str(GENERATOR), "--check", "--openapi",
                             str(OPENAPI_PATH)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_check_fails_on_stale_data(tmp_path: Path) -> None:
    skip_without_openapi()
    stale = tmp_path / "catalog.json"
    stale.write_text(DATA.read_text(encoding="utf-8").replace('"format": 1', '"format": 0', 1),
                     encoding="utf-8")
    result = subprocess.run([sys.executable, str(GENERATOR), "--check", "--openapi",
                             str(OPENAPI_PATH), "--output", str(stale)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1
    assert "stale" in result.stderr


def test_generated_data_records_the_document_and_no_prose() -> None:
    version, sha = catalog.openapi_version()
    assert version and sha and len(sha) == 64

    def keys(node: object, under_properties: bool = False) -> set[str]:
        found: set[str] = set()
        if isinstance(node, dict):
            for key, value in node.items():
                if not under_properties:
                    found.add(key)
                found |= keys(value, key in ("properties", "$defs", "steps"))
        elif isinstance(node, list):
            for value in node:
                found |= keys(value)
        return found

    data = json.loads(DATA.read_text(encoding="utf-8"))
    assert not {k for k in keys(data) if k.startswith(PROSE)}


def test_every_step_type_of_the_document_is_catalogued(api: OpenApi) -> None:
    mapping = api.schema("WorkflowStepTemplate")["discriminator"]["mapping"]
    assert set(catalog.known_types()) == set(mapping)


@pytest.mark.parametrize("variant", VARIANTS, ids=_id)
def test_minimal_body_and_required_fields(api: OpenApi, variant: catalog.Variant) -> None:
    body = variant.example
    assert api.errors("WorkflowTemplate", _template(variant.step_type, body)) == []
    assert catalog.check_input(variant.step_type, body) == []
    if not isinstance(body, dict):
        return
    for name in variant.schema.get("required", ()):
        mutated = {k: v for k, v in body.items() if k != name}
        assert api.errors("WorkflowTemplate", _template(variant.step_type, mutated)), name
        assert catalog.check_input(variant.step_type, mutated), name


def test_misspelt_engine_names_get_a_did_you_mean() -> None:
    """Promise: did-you-mean over engine / ecosystem / operation names of the document."""
    engine = catalog.check_input("videoGen", {"engine": "veo", "prompt": "x"})
    assert [(i.kind, i.suggestions) for i in engine if i.path == ("engine",)] == [
        (catalog.IssueKind.UNKNOWN_VARIANT, ("veo3",))]
    kontext = catalog.check_input("imageGen", {"engine": "flux1-kontxt", "model": "pro",
                                               "prompt": "x", "widht": 3})
    assert [(i.kind, i.path, i.suggestions) for i in kontext] == [
        (catalog.IssueKind.UNKNOWN_VARIANT, ("engine",), ("flux1-kontext",)),
        (catalog.IssueKind.UNKNOWN_FIELD, ("widht",), ())]
    assert kontext[1].message == \
        "'widht' is not a field of imageGen (engine flux1-kontext, model pro)"
