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
from civflow.loading import load_pipeline
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


TRIO = """\
version: 1
name: trio
steps:
  say:
    type: echo
    matrix:
      word: [one, two, three]
    input:
      message: "{{ matrix.word }}"
"""


def _decisions(project: Project, name: str, *args: str) -> dict[str, dict[str, Any]]:
    shown = project.cli("plan", f"pipelines/{name}.yaml", "--format", "json", *args)
    assert shown.code == 0, shown.text
    return {p["instance"]: p for p in json.loads(shown.out)["instances"]}


def test_failed_last_time_is_a_decision_of_the_plan_and_the_run_does_it(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: the plan shows what the run does. Instances whose last attempt failed
    are planned `failed` at 0 Buzz with the --retry-failed hint, and the run sends none
    of them; with --retry-failed both say they run again."""
    project, emulator = ready
    project.write("trio", TRIO)
    emulator.set_faults(step_failure_rate=1)
    assert project.run("trio").code == 7
    emulator.set_faults(step_failure_rate=0)
    made = created(emulator)
    project.write("trio", TRIO.replace("three]", "three, four]"))
    planned = _decisions(project, "trio")
    assert {n: p["decision"] for n, p in planned.items()} == {
        "say[word=one]": "failed", "say[word=two]": "failed", "say[word=three]": "failed",
        "say[word=four]": "new"}
    failed = planned["say[word=one]"]
    assert failed["estimate"] == 0 and "--retry-failed" in " ".join(failed["reasons"])
    text = project.cli("plan", "pipelines/trio.yaml")
    assert "1 to run" in text.text and "3 failed" in text.text, text.text
    outcome = project.run("trio")
    assert outcome.code == 7 and "3 failed" in outcome.err, outcome.text
    assert created(emulator) == made + 1  # only the new one
    again = _decisions(project, "trio", "--retry-failed")
    assert {p["decision"] for n, p in again.items() if n != "say[word=four]"} == {"new"}
    assert project.run("trio", "--retry-failed").code == 0
    assert created(emulator) == made + 4


def test_a_blocked_instance_is_planned_failed_even_with_retry_failed(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from civflow.emulator import EmulatorConfig, start_emulator
    from tests.e2e.support import MODEL, SECRET, aim

    pipeline = f"""\
version: 1
name: owls
steps:
  shot:
    type: imageGen
    matrix:
      bird: [owl, forbidden owl]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "a {{{{ matrix.bird }}}}"
      width: 256
      height: 256
      steps: 10
"""
    config = EmulatorConfig(announce=False, time_scale=0, api_key=SECRET,
                            blocked_words=("forbidden",))
    with start_emulator(config) as emulator:
        aim(monkeypatch, emulator)
        project.write("owls", pipeline)
        assert project.run("owls").code == 7
        made = created(emulator)
        planned = _decisions(project, "owls", "--retry-failed")
        blocked = planned["shot[bird=forbidden owl]"]
        assert blocked["decision"] == "failed" and blocked["estimate"] == 0
        assert "moderation" in " ".join(blocked["reasons"])
        outcome = project.run("owls", "--retry-failed")
        assert outcome.code == 7 and created(emulator) == made, outcome.text


def test_plan_shows_the_workflows_the_run_sends(ready: tuple[Project, RunningEmulator]
                                                 ) -> None:
    """Batching by default: the workflows `plan` lists are the workflows `run` sends."""
    project, emulator = ready
    project.write("trio", TRIO.replace("name: trio", "name: trio\nbatch: 2"))
    shown = project.cli("plan", "pipelines/trio.yaml", "--format", "json")
    groups = [sorted(w["members"]) for w in json.loads(shown.out)["workflows"]]
    assert project.run("trio").code == 0
    lock = project.lock("trio")["instances"]
    by_workflow: dict[str, list[str]] = {}
    for name, entry in lock.items():
        by_workflow.setdefault(entry["workflowId"], []).append(name)
    assert sorted(groups) == sorted(sorted(m) for m in by_workflow.values())
    assert emulator.counters()["workflows_created"] == len(groups) == 2


RUN_TAGGED = """\
version: 1
name: tagged
steps:
  say:
    type: echo
    input: {message: "a fox in the snow"}
  polish:
    type: promptEnhancement
    input:
      prompt: "{{ steps.say.output.message }}"
      ecosystem: sdxl
      instruction: "for run {{ run.id }}"
"""


def test_the_run_sends_the_plans_grouping_not_one_of_its_own(
        ready: tuple[Project, RunningEmulator]) -> None:
    """The grouping is decided once, by the plan. `polish` reads `run.id`, which the plan
    cannot know, so the plan does not fuse it onto `say`; the run, which does know its
    id, must still not fuse it (it used to regroup, and sent one workflow where the plan
    showed two)."""
    project, emulator = ready
    project.write("tagged", RUN_TAGGED)
    shown = project.cli("plan", "pipelines/tagged.yaml", "--format", "json")
    assert shown.code == 0, shown.text
    assert all(len(w["members"]) == 1 for w in json.loads(shown.out).get("workflows", []))
    assert project.run("tagged").code == 0
    lock = project.lock("tagged")["instances"]
    assert lock["say"]["workflowId"] != lock["polish"]["workflowId"]
    assert emulator.counters()["workflows_created"] == 2
