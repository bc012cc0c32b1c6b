"""Crash safety: kill -9 at random moments, Ctrl-C, and cancel, with a real subprocess.

The emulator serves from this test process, so its counters outlive every kill and
prove that no instance was ever created (and paid for) twice.
"""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.e2e.support import FAN, SECRET, Project, aim, check_artifacts, created, spawn

SLOW = """\
version: 1
name: slow
steps:
  clip:
    type: videoGen
    matrix:
      take: [1, 2]
    input:
      engine: wan
      version: v2.6
      provider: fal
      cfgScale: 4
      operation: text-to-video
      prompt: "take {{ matrix.take }} of a waterfall"
      resolution: 720p
      duration: 5
"""


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """Jobs last a few tenths of a second, so a kill lands in every phase of a run."""
    with start_emulator(EmulatorConfig(announce=False, time_scale=0.3, api_key=SECRET)) as running:
        aim(monkeypatch, running)
        yield running


def _journal_has(project: Project, event: str, deadline: float = 30.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for record in project.journal_records_safe():
            if record.get("event") == event:
                return True
        time.sleep(0.05)
    return False


def _no_double_creation(emulator: RunningEmulator, instances: int) -> None:
    counters = emulator.counters()
    per_key = counters["creations_by_external_id"]
    assert all(n == 1 for n in per_key.values()), per_key
    made = counters["step_creations"]  # by instance name: batches hold several
    assert all(n == 1 for n in made.values()) and len(made) == instances, made


def test_kill_9_at_random_moments_never_pays_twice(project: Project,
                                                     served: RunningEmulator) -> None:
    project.write("fan", FAN)
    rng = random.Random(20240611)
    for round_ in range(5):
        process = spawn(project, served, "fan", log=f"kill{round_}")
        time.sleep(rng.uniform(0, 2))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        # Whatever was created so far was created once.
        assert all(n == 1 for n in served.counters()["creations_by_external_id"].values())
    served.set_faults(time_scale=0)
    final = project.run("fan")
    assert final.code == 0, final.text
    lock = check_artifacts(project, "fan")
    assert len(lock["instances"]) == 13
    _no_double_creation(served, 13)
    # A clean re-run after all that is a no-op.
    again = project.run("fan")
    assert again.code == 0 and "13 cached" in again.err, again.text
    assert created(served) == 13


def test_ctrl_c_prints_resume_and_cancel_then_resumes(project: Project,
                                                     served: RunningEmulator) -> None:
    project.write("fan", FAN)
    served.set_faults(time_scale=1)
    process = spawn(project, served, "fan", log="sigint")
    assert _journal_has(project, "submitted"), (project.root / "sigint.err").read_text()
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    err = (project.root / "sigint.err").read_text(encoding="utf-8")
    assert "interrupted" in err
    assert "resume:  civflow run pipelines/fan.yaml" in err
    assert "cancel:  civflow cancel pipelines/fan.yaml" in err
    assert "Traceback" not in err
    assert any(r.get("event") == "interrupted" for r in project.journal_records())

    served.set_faults(time_scale=0)
    resumed = project.run("fan")
    assert resumed.code == 0, resumed.text
    assert "resuming interrupted run" in resumed.err
    check_artifacts(project, "fan")
    _no_double_creation(served, 13)


def test_cancel_stops_the_in_flight_workflows_of_a_killed_run(
        project: Project, served: RunningEmulator) -> None:
    project.write("slow", SLOW)
    served.set_faults(time_scale=1)  # a video takes 30 s: still running when we cancel
    before = created(served)
    process = spawn(project, served, "slow", log="slow")
    end = time.monotonic() + 30
    # The POSTs long-poll, so no answer reaches the journal: wait for the server instead.
    while time.monotonic() < end and created(served) - before < 2:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    headers = {"Authorization": f"Bearer {SECRET}"}
    runs = sorted((project.root / ".civflow" / "runs").iterdir())
    run_id = runs[-1].name
    listed = httpx.get(f"{served.url}/v2/consumer/workflows", headers=headers,
                       params={"tags": f"civflow-run:{run_id}"}).json()["items"]
    ids = [w["id"] for w in listed]
    assert len(ids) == 1  # both clips, batched in one workflow

    status = project.cli("status", "pipelines/slow.yaml")
    assert status.code == 0, status.text
    assert "unfinished" in status.out and "sent" in status.out

    outcome = project.cli("cancel", "pipelines/slow.yaml")
    assert outcome.code == 0, outcome.text
    assert outcome.out.startswith("canceled 1 workflow(s)")
    for workflow_id in ids:
        answer = httpx.get(f"{served.url}/v2/consumer/workflows/{workflow_id}", headers=headers)
        assert answer.json()["status"] == "canceled"
    assert "nothing to cancel" in project.cli("cancel", "pipelines/slow.yaml").out

    as_json = project.cli("status", "pipelines/slow.yaml", "--format", "json")
    rows = json.loads(as_json.out)["instances"]
    assert {r["instance"] for r in rows} == {"clip[take=1]", "clip[take=2]"}


def test_status_lists_instances_costs_and_artifacts(project: Project,
                                                    served: RunningEmulator) -> None:
    served.set_faults(time_scale=0)
    project.write("fan", FAN)
    assert project.run("fan").code == 0
    outcome = project.cli("status", "pipelines/fan.yaml", "--format", "json")
    assert outcome.code == 0, outcome.text
    summary = json.loads(outcome.out)
    assert summary["finished"] is True
    rows = {r["instance"]: r for r in summary["instances"]}
    assert rows["gen[n=3]"]["status"] == "succeeded"
    assert rows["gen[n=3]"]["cost"] > 0
    ups = [name for name in rows if name.startswith("up[")]
    assert len(ups) == 6
    assert [Path(p).name for p in rows[ups[2]]["artifacts"]] == ["0.jpeg"]
    text = project.cli("status", "pipelines/fan.yaml").out
    assert "finished" in text and ups[5] in text
