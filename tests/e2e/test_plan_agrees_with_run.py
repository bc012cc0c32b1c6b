"""`civflow plan` says what `civflow run` then does: plan -> run -> compare.

One Policy decides both (civflow.plan); these tests hold the promise end to end for
forced, rerolled, --only, resumed and fan-out runs.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from civflow.check import check_pipeline
from civflow.emulator import RunningEmulator
from civflow.load import load_pipeline
from civflow.store.journal import Journal, external_id
from tests.e2e.support import CHAIN, Project, created

RUNS = ("new", "changed", "forced")


def _intents(project: Project) -> list[str]:
    return [str(r["instance"]) for r in project.journal_records() if r.get("event") == "intent"]


def _plan_then_run(project: Project, *args: str) -> tuple[list[dict[str, Any]], set[str], str]:
    shown = project.cli("plan", "pipelines/chain.yaml", "--format", "json", *args)
    assert shown.code == 0, shown.text
    planned: list[dict[str, Any]] = json.loads(shown.out)["instances"]
    before = len(_intents(project))
    outcome = project.run("chain", *args)
    assert outcome.code == 0, outcome.text
    return planned, set(_intents(project)[before:]), outcome.err


def _agree(planned: list[dict[str, Any]], submitted: set[str], err: str) -> None:
    runs = {p["instance"] for p in planned if p["decision"] in RUNS and not p["fanout"]}
    fanned = {p["step"] for p in planned if p["decision"] in RUNS and p["fanout"]}
    assert runs <= submitted, (runs, submitted)
    extra = {name for name in submitted - runs if name.split("[", 1)[0] not in fanned}
    assert not extra, f"run submitted {extra} that plan did not list as running"
    cached = [p for p in planned if p["decision"] == "cached"]
    assert not {p["instance"] for p in cached} & submitted
    if cached:
        assert f"{len(cached)} cached" in err


@pytest.mark.parametrize("args", [
    (),
    ("--force", "upscale"),
    ("--reroll", "hero"),
    ("--only", "SECOND_UPSCALE", "--force", "upscale"),
    ("--var", "motion=fast zoom"),
])
def test_plan_and_run_agree(ready: tuple[Project, RunningEmulator], args: tuple[str, ...]
                            ) -> None:
    project, _emulator = ready
    project.write("chain", CHAIN)
    first, submitted, err = _plan_then_run(project)
    assert {p["instance"] for p in first} == {"hero", "upscale[*]", "clip"}
    _agree(first, submitted, err)
    second = sorted(n for n in project.lock("chain")["instances"] if n.startswith("upscale["))[1]
    args = tuple(second if a == "SECOND_UPSCALE" else a for a in args)
    planned, submitted, err = _plan_then_run(project, *args)
    _agree(planned, submitted, err)
    if args:
        assert submitted, "every scenario re-runs something"
    if "--only" in args:
        assert submitted == {second}


def test_plan_and_run_agree_on_a_resumed_run(ready: tuple[Project, RunningEmulator]) -> None:
    """A run that died after submitting `hero`: plan names it to run, and run re-attaches
    by its journaled externalId (the API returns the workflow, nothing new is paid)."""
    project, emulator = ready
    path = project.write("chain", CHAIN)
    from civflow.runner import prepare

    hero = prepare(check_pipeline(load_pipeline(path))).plan.instances[0]
    fp = hero.instance.fingerprint
    assert hero.name == "hero" and fp is not None
    journal = Journal.create(project.root / ".civflow" / "runs", "chain")
    journal.append({"event": "run-started", "pipeline": "chain"})
    journal.append({"event": "intent", "instance": "hero", "fingerprint": fp,
                    "externalId": external_id(fp, 1), "attempt": 1})
    planned, submitted, err = _plan_then_run(project)
    assert "resuming interrupted run" in err
    _agree(planned, submitted, err)
    assert created(emulator) == 4  # hero, two upscales, clip: each once
