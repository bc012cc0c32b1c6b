"""Multi-step workflows as civflow's batches and fused chains send them: independent
named steps, `$ref` chains, a step blocked by moderation among its batch-mates, a
whole workflow canceled, and the per-step counters that prove nothing was made twice."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.emulator.conftest import PREFIX, Api, image_step, openapi_or_none


@pytest.fixture
def moderated() -> Iterator[tuple[RunningEmulator, Api]]:
    """An emulator whose moderation blocks prompts with 'forbidden', and its checked API."""
    config = EmulatorConfig(time_scale=0, blocked_words=("forbidden",))
    with start_emulator(config) as running, httpx.Client(
            base_url=running.url, headers={"Authorization": "Bearer k"}, timeout=60) as client:
        yield running, Api(client, openapi_or_none())


def _batch() -> dict[str, object]:
    return {"externalId": "batch-1", "steps": [
        image_step("gen[a]", prompt="a fox", size=128),
        image_step("gen[b]", prompt="a forbidden owl", size=128),
        image_step("gen[c]", prompt="a wolf", size=128),
        {"$type": "imageUpscaler", "name": "up[b]",
         "input": {"image": {"$ref": "gen[b]", "path": "output.images[0].url"}}},
        {"$type": "imageUpscaler", "name": "up[c]",
         "input": {"image": {"$ref": "gen[c]", "path": "output.images[0].url"}}},
    ]}


def test_a_blocked_step_fails_alone_and_cancels_only_what_takes_its_output(
        moderated: tuple[RunningEmulator, Api]) -> None:
    """Promise (emulator fidelity): in one workflow a step blocked by moderation fails,
    its output holding blobs with a `blockedReason` (as the OpenAPI document types it)
    and `errors`; the step that takes its output is
    canceled; its independent batch-mates and their own chains succeed with outputs; the
    workflow rolls up to failed."""
    emulator, api = moderated
    workflow = api.submit(_batch())
    steps = {s["name"]: s for s in workflow["steps"]}
    assert workflow["status"] == "failed"
    assert {n: s["status"] for n, s in steps.items()} == {
        "gen[a]": "succeeded", "gen[b]": "failed", "gen[c]": "succeeded",
        "up[b]": "canceled", "up[c]": "succeeded"}
    held = steps["gen[b]"]["output"]
    assert held["images"][0]["blockedReason"] == "moderation"
    assert held["images"][0]["available"] is False and held["errors"]
    assert steps["gen[a]"]["output"]["images"][0]["available"] is True
    assert steps["up[c]"]["output"]["blob"]["width"] == 256  # its source, doubled
    assert steps["up[c]"]["input"]["image"].startswith(emulator.url)  # the resolved URL


def test_counters_count_steps_by_name_and_an_externalid_hit_creates_nothing(
        moderated: tuple[RunningEmulator, Api]) -> None:
    """Promise (emulator fidelity): the counters say how many workflows and steps were
    created and charged, per step name and per step price; re-sending the same
    externalId returns the workflow and creates and charges nothing."""
    emulator, api = moderated
    first = api.submit(_batch())
    again = api.submit(_batch())
    assert again["id"] == first["id"]
    counters = emulator.counters()
    assert counters["workflows_created"] == 1 and counters["external_id_hits"] == 1
    assert counters["steps_created"] == 5
    assert counters["step_creations"] == {n: 1 for n in
                                          ("gen[a]", "gen[b]", "gen[c]", "up[b]", "up[c]")}
    by_step = counters["buzz_by_step"]
    assert set(by_step) == set(counters["step_creations"])
    assert counters["buzz_charged"] == first["cost"]["total"]
    assert sum(by_step.values()) <= counters["buzz_charged"] < sum(by_step.values()) + 1


def test_cancel_keeps_what_succeeded_and_cancels_the_rest(
        moderated: tuple[RunningEmulator, Api]) -> None:
    """Promise (emulator fidelity): canceling a multi-step workflow (civflow does it at a
    batch's timeout) cancels only the steps not finished; finished ones keep outputs."""
    emulator, api = moderated
    emulator.set_faults(time_scale=0)
    body = {"steps": [image_step("fast", size=128),
                      {"$type": "videoGen", "name": "slow", "input": {
                          "engine": "wan", "version": "v2.6", "provider": "fal",
                          "cfgScale": 4, "operation": "text-to-video", "prompt": "rain",
                          "resolution": "720p", "duration": 5}}]}
    # Simulated, the video takes 30 s and the image 2 s: at a quarter of real time the
    # image is done within the first one-second long-poll, the video far from it.
    emulator.set_faults(time_scale=0.25)
    created = api.submit(body, wait=0, expect=202)
    for _ in range(100):
        state = api.get(created["id"], wait=1).json()
        if state["steps"][0]["status"] == "succeeded":
            break
    api.call("PUT", f"{PREFIX}/workflows/{{workflowId}}", expect=204,
             path={"workflowId": created["id"]}, json={"status": "canceled"})
    final = api.get(created["id"]).json()
    assert final["status"] == "canceled"
    assert [s["status"] for s in final["steps"]] == ["succeeded", "canceled"]
    assert final["steps"][0]["output"]["images"]
