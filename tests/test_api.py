"""The public Python API: its surface, and a notebook-style session against the emulator."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

import civflow
from civflow.errors import SpendingRefused

PIPELINE = """\
version: 1
name: notebook
vars:
  subject: a red fox
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: urn:air:sdxl:checkpoint:civitai:101055@128078
      prompt: "{{ subject }}"
      width: 256
      height: 256
      steps: 10
  note:
    type: echo
    input:
      message: "{{ steps.hero.output.images[0].id }}"
"""


def test_the_public_surface_is_curated() -> None:
    assert civflow.__all__ == sorted(civflow.__all__)
    for name in civflow.__all__:
        assert hasattr(civflow, name), name
    for name in ("load", "plan", "estimate", "aestimate", "run", "arun"):
        function = getattr(civflow, name)
        assert function.__doc__ and ">>>" in function.__doc__, name
    assert inspect.iscoroutinefunction(civflow.arun)
    assert inspect.iscoroutinefunction(civflow.aestimate)
    assert list(inspect.signature(civflow.plan).parameters) == [
        "checked", "force", "reroll", "only", "retry_failed", "emulator"]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".civflow").mkdir()
    (tmp_path / "notebook.yaml").write_text(PIPELINE, encoding="utf-8")
    monkeypatch.setenv("CIVFLOW_EMULATOR_TIME_SCALE", "0")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_notebook_session_runs_twice_and_inside_a_running_loop(folder: Path) -> None:
    checked = civflow.load(folder / "notebook.yaml", vars={"subject": "a blue fox"})
    assert civflow.plan(checked).counts() == {"new": 2}
    assert civflow.estimate(checked).total > 0
    first = civflow.run(checked, emulator=True)
    assert first.count("succeeded") == 2 and first.spent > 0
    (image,) = first.files["hero"]
    assert image.is_file() and image.is_relative_to(folder / "out")
    assert "hero" in first.table() and "spent" in str(first)
    # A second call (civflow.runner used to be shadowed by the civflow.runner package) and
    # the plan for the emulator reads its previews: everything is cached. For the real
    # API nothing is: a preview is never paid work.
    assert civflow.plan(checked, emulator=True).counts() == {"cached": 2}
    assert civflow.plan(checked).counts() == {"new": 2}
    again = civflow.run(checked, emulator=True)
    assert again.count("cached") == 2 and again.spent == 0

    async def cell() -> civflow.RunResult:
        # Jupyter runs cells inside a loop: the synchronous call must still work.
        return civflow.run(checked, emulator=True, force=["note"])

    inside = asyncio.run(cell())
    assert inside.results["note"].status == "succeeded"
    assert asyncio.run(civflow.arun(checked, emulator=True)).count("cached") == 2


def test_the_real_api_is_never_called_without_consent(folder: Path) -> None:
    checked = civflow.load(folder / "notebook.yaml")
    with pytest.raises(SpendingRefused, match="needs consent"):
        civflow.run(checked)


def test_batch_packs_a_notebook_run_like_the_flag(folder: Path) -> None:
    """`batch=` does what `run --batch N` does: the fused chain is one workflow."""
    checked = civflow.load(folder / "notebook.yaml")
    result = civflow.run(checked, emulator=True, batch=5)
    assert result.count("succeeded") == 2
    lock = (folder / ".civflow" / "previews" / "notebook.lock.json").read_text(encoding="utf-8")
    ids = {line.split('"workflowId": "')[1].split('"')[0]
           for line in lock.splitlines() if '"workflowId"' in line}
    assert len(ids) == 1, ids
    with pytest.raises(civflow.errors.UsageError, match="from 1 to 100"):
        civflow.run(checked, emulator=True, batch=0)
