"""A new time scale applies to the work in flight: what is left of each step's simulated
time is stretched to it, so a test that slowed the emulator down to catch a job in flight
can speed it up again and have that job finish now, not after its old thirty seconds."""

from __future__ import annotations

import time
from typing import Any

from civflow.emulator import RunningEmulator
from tests.emulator.conftest import Api, image_step

TERMINAL = ("succeeded", "failed", "expired", "canceled")
VIDEO = {"$type": "videoGen", "name": "clip", "input": {  # 30 s of simulated work
    "engine": "wan", "version": "v2.6", "provider": "fal", "cfgScale": 4,
    "operation": "text-to-video", "prompt": "rain on a window", "resolution": "720p",
    "duration": 5}}


def _until(api: Api, workflow_id: str, status: str, seconds: float = 10.0) -> dict[str, Any]:
    """The workflow once its first step is in `status` (polled, within a bound)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        state: dict[str, Any] = api.get(workflow_id).json()
        if state["steps"][0]["status"] == status:
            return state
        time.sleep(0.02)
    raise AssertionError(f"step never reached {status}: {state['steps'][0]['status']}")


def _finished(api: Api, workflow_id: str) -> tuple[dict[str, Any], float]:
    """The workflow once it ended (long-polled), and the seconds that took."""
    began = time.monotonic()
    answer = api.get(workflow_id, wait=20)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data, time.monotonic() - began


def test_scale_zero_finishes_a_slow_job_in_flight_at_once_and_charges_it_once(
        emulator: RunningEmulator, api: Api) -> None:
    """Promise (emulator fidelity): a video begun at scale 1 (30 s of work) finishes
    within seconds once the scale is 0, still through processing to succeeded, with its
    output, charged once."""
    emulator.set_faults(time_scale=1)
    created = api.submit({"steps": [VIDEO]}, wait=0, expect=202)
    assert api.get(created["id"]).json()["status"] not in TERMINAL
    emulator.set_faults(time_scale=0)
    done, took = _finished(api, created["id"])
    assert took < 10  # it would have taken 30
    step = done["steps"][0]
    assert done["status"] == step["status"] == "succeeded"
    assert step["startedAt"] and step["startedAt"] <= step["completedAt"]
    assert step["output"]["video"]["available"] is True
    counters = emulator.counters()
    assert counters["workflows_created"] == 1 and counters["step_creations"] == {"clip": 1}
    assert counters["buzz_charged"] == created["cost"]["total"]
    assert [t["type"] for t in done["transactions"]["list"]] == ["debit"]


def test_a_positive_scale_stretches_what_is_left_both_ways(
        emulator: RunningEmulator, api: Api) -> None:
    """Promise (emulator fidelity): from one positive scale to another, what is left of a
    job is stretched in proportion: slowed down in processing it stays where its progress
    was; sped up it finishes as fast as the new scale says, not the old one."""
    emulator.set_faults(time_scale=0.1)  # 3 s in all, processing after 0.75 s
    created = api.submit({"steps": [VIDEO]}, wait=0, expect=202)
    before = _until(api, created["id"], "processing")["steps"][0]["estimatedProgressRate"]
    emulator.set_faults(time_scale=1000)  # what is left now takes hours
    time.sleep(0.3)
    held = api.get(created["id"]).json()["steps"][0]
    assert held["status"] == "processing"
    assert before <= held["estimatedProgressRate"] < before + 0.1
    emulator.set_faults(time_scale=0.01)  # what is left of 30 s now takes a fraction of one
    done, took = _finished(api, created["id"])
    assert took < 10
    assert done["steps"][0]["status"] == "succeeded"
    assert emulator.counters()["step_creations"] == {"clip": 1}


def test_a_ref_chain_in_flight_finishes_in_order_after_the_change(
        emulator: RunningEmulator, api: Api) -> None:
    """Promise (emulator fidelity): a `$ref` chain begun slowly still runs each step
    after its source, on its source's output, once the scale is 0; each is made once."""
    emulator.set_faults(time_scale=1)
    gen = image_step("gen", size=512, quantity=4)
    gen["input"]["steps"] = 100  # 22 s of work, then 6 s for the upscale
    chain = {"steps": [
        gen,
        {"$type": "imageUpscaler", "name": "up",
         "input": {"image": {"$ref": "gen", "path": "output.images[0].url"}}},
        {"$type": "echo", "name": "say",
         "input": {"message": {"$ref": "up", "path": "output.blob.url"}}},
    ]}
    created = api.submit(chain, wait=0, expect=202)
    assert api.get(created["id"]).json()["status"] not in TERMINAL
    emulator.set_faults(time_scale=0)
    done, took = _finished(api, created["id"])
    assert took < 10
    made, up, say = done["steps"]
    assert [s["status"] for s in (made, up, say)] == ["succeeded"] * 3
    assert made["completedAt"] <= up["startedAt"] and up["completedAt"] <= say["startedAt"]
    assert up["input"]["image"].startswith(emulator.url)  # resolved from gen's output
    assert say["output"]["message"] == say["input"]["message"]
    assert say["output"]["message"].startswith(emulator.url)
    assert emulator.counters()["step_creations"] == {"gen": 1, "up": 1, "say": 1}
