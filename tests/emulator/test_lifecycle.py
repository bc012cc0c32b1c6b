"""Chaining, failure propagation, faults, counters and persistence of the emulator."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.emulator.conftest import PREFIX, Api, echo_step, image_step, openapi_or_none

WF = f"{PREFIX}/workflows/{{workflowId}}"


def test_refs_by_name_position_and_arguments_resolve(api: Api) -> None:
    body = {
        "arguments": {"word": "lantern"},
        "steps": [
            {"$type": "echo", "name": "first",
             "input": {"message": {"$ref": "$arguments", "path": "word"}}},
            {"$type": "echo", "input": {"message": {"$ref": "first", "path": "output.message"}}},
            {"$type": "echo", "input": {"message": {"$ref": "$1", "path": "output.message"}}},
        ],
    }
    workflow = api.submit(body)
    assert workflow["status"] == "succeeded"
    assert [s["output"]["message"] for s in workflow["steps"]] == ["lantern"] * 3
    # The dependent's input shows the resolved value once its source succeeded.
    assert workflow["steps"][2]["input"]["message"] == "lantern"


def test_image_chain_upscale_convert_cutout(api: Api) -> None:
    body = {"steps": [
        image_step(size=128),
        {"$type": "imageUpscaler", "name": "big",
         "input": {"image": {"$ref": "hero", "path": "output.images[0].url"},
                   "numberOfRepeats": 2}},
        {"$type": "convertImage",
         "input": {"image": {"$ref": "big", "path": "output.blob.url"},
                   "transforms": [{"type": "resize", "targetWidth": 100}],
                   "output": {"format": "webp", "hideMetadata": True}}},
        {"$type": "imageBackgroundRemoval",
         "input": {"image": {"$ref": "hero", "path": "output.images[0].url"}}},
    ]}
    steps = api.submit(body)["steps"]
    assert steps[1]["output"]["blob"]["width"] == 512  # ×2 per repeat
    converted = steps[2]["output"]["blob"]
    assert converted["width"] == 100 and converted["id"].endswith(".webp")
    assert steps[3]["output"]["image"]["id"].endswith(".png")


def test_source_failure_cancels_dependents(emulator: RunningEmulator, api: Api) -> None:
    emulator.set_faults(step_failure_rate=1.0)
    body = {"steps": [echo_step("a"),
                      {"$type": "echo", "input": {"message": {"$ref": "$0",
                                                              "path": "output.message"}}}]}
    workflow = api.submit(body)
    assert [s["status"] for s in workflow["steps"]] == ["failed", "canceled"]
    assert workflow["status"] == "failed"
    assert workflow["steps"][1]["jobs"][0]["status"] == "canceled"


def test_step_expiry_rate_and_timeout_expire(emulator: RunningEmulator, api: Api) -> None:
    emulator.set_faults(step_expiry_rate=1.0)
    assert api.submit({"steps": [echo_step()]})["status"] == "expired"
    emulator.set_faults(step_expiry_rate=0.0)
    # A 30 s video cannot finish within a 1 s step timeout.
    video = {"$type": "videoGen", "timeout": "00:00:01", "input": {
        "engine": "wan", "version": "v2.6", "provider": "fal", "operation": "text-to-video",
        "prompt": "waves", "resolution": "720p", "duration": 5, "cfgScale": 4}}
    workflow = api.submit({"steps": [video]})
    assert workflow["status"] == "expired"
    assert workflow["steps"][0]["timeout"] == "00:00:01"


def test_unreachable_source_fails_the_job(api: Api) -> None:
    body = {"steps": [{"$type": "imageUpscaler",
                       "input": {"image": "http://127.0.0.1:9/nothing-listens-here.png"}}]}
    workflow = api.submit(body)
    assert workflow["status"] == "failed"
    assert "output" not in workflow["steps"][0]


def test_forgotten_blob_is_404_and_fails_consumers(emulator: RunningEmulator, api: Api) -> None:
    made = api.submit({"steps": [image_step()]})["steps"][0]["output"]["images"][0]
    emulator.forget_blob(made["id"])
    api.call("GET", f"{PREFIX}/blobs/{{blobId}}", path={"blobId": made["id"]}, expect=404)
    upscale = api.submit({"steps": [{"$type": "imageUpscaler", "input": {"image": made["url"]}}]})
    assert upscale["status"] == "failed"


def test_error_rate_answers_503_and_drop_rate_closes_connection(emulator: RunningEmulator,
                                                                api: Api) -> None:
    emulator.set_faults(error_rate=1.0)
    assert api.client.get(f"{PREFIX}/workflows").status_code == 503
    # Admin routes are never faulted.
    assert emulator.counters()["requests"]["GET /v2/consumer/workflows"] == {"503": 1}
    emulator.set_faults(error_rate=0.0, drop_rate=1.0)
    with pytest.raises(httpx.TransportError):
        api.client.get(f"{PREFIX}/workflows")
    assert emulator.counters()["requests"]["GET /v2/consumer/workflows"]["dropped"] == 1
    emulator.set_faults(drop_rate=0.0)
    assert api.client.get(f"{PREFIX}/workflows").status_code == 200


def test_faults_are_repeatable_with_a_seed() -> None:
    def pattern() -> list[int]:
        with start_emulator(EmulatorConfig(time_scale=0, error_rate=0.5, fault_seed=7)) as emu, \
                httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"}) as client:
            return [client.get(f"{PREFIX}/workflows").status_code for _ in range(12)]

    first = pattern()
    assert first == pattern()
    assert {200, 503} == set(first)


def test_bad_fault_settings_are_rejected(emulator: RunningEmulator) -> None:
    response = httpx.put(f"{emulator.url}/_emulator/faults", json={"error_rate": 3})
    assert response.status_code == 400
    assert "share" in response.json()["errors"]["faults"][0]


def test_patch_cancel_and_tag_routes(emulator: RunningEmulator, api: Api) -> None:
    emulator.set_faults(time_scale=1000)
    workflow = api.submit({"steps": [echo_step()], "tags": ["a"]}, wait=0, expect=202)
    ref = {"workflowId": workflow["id"]}
    api.call("POST", f"{WF}/tags", path=ref, expect=204, json="b")
    assert api.get(workflow["id"]).json()["tags"] == ["a", "b"]
    api.call("DELETE", f"{WF}/tags/{{tag}}", path={**ref, "tag": "a"}, expect=204)
    assert api.get(workflow["id"]).json()["tags"] == ["b"]
    api.call("PATCH", WF, path=ref, expect=204,
             json=[{"op": "replace", "path": "/status", "value": "canceled"}],
             headers={"Content-Type": "application/json-patch+json"})
    assert api.get(workflow["id"]).json()["status"] == "canceled"
    api.call("PATCH", WF, path=ref, expect=400, json=[{"op": "remove", "path": "/steps"}])


def test_list_exclude_failed(emulator: RunningEmulator, api: Api) -> None:
    ok = api.submit({"steps": [echo_step()]})
    emulator.set_faults(step_failure_rate=1.0)
    api.submit({"steps": [echo_step()]})
    page = api.call("GET", f"{PREFIX}/workflows", expect=200,
                    params={"excludeFailed": "true"}).json()
    assert [item["id"] for item in page["items"]] == [ok["id"]]


def test_state_dir_survives_a_restart(tmp_path: Path) -> None:
    spec = openapi_or_none()
    config = EmulatorConfig(time_scale=0, state_dir=tmp_path)
    with start_emulator(config) as emu, \
            httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"}) as client:
        made = Api(client, spec).submit({"steps": [image_step()], "externalId": "keep"})
        first_bytes = client.get(made["steps"][0]["output"]["images"][0]["url"],
                                 follow_redirects=True).content
    assert list((tmp_path / "workflows").glob("*.json"))
    assert not list(tmp_path.rglob("*.tmp"))
    with start_emulator(EmulatorConfig(time_scale=0, state_dir=tmp_path)) as emu, \
            httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"}) as client:
        api = Api(client, spec)
        again = api.get(made["id"]).json()
        assert again["status"] == "succeeded"
        url = again["steps"][0]["output"]["images"][0]["url"]
        assert client.get(url, follow_redirects=True).content == first_bytes
        # The externalId index survived too: no second workflow.
        assert api.submit({"steps": [image_step()], "externalId": "keep"})["id"] == made["id"]
        assert emu.counters()["workflows_created"] == 0
        newer = api.submit({"steps": [echo_step()]})
        assert newer["id"] > made["id"]


def test_ephemeral_workflow_is_answered_then_forgotten(api: Api) -> None:
    body = {"steps": [echo_step("once")], "ephemeral": True}
    assert "ephemeral" in api.submit(body, wait=0, expect=400)["errors"]
    done = api.submit(body, wait=30)
    assert done["status"] == "succeeded" and done["steps"][0]["output"] == {"message": "once"}
    api.call("GET", WF, path={"workflowId": done["id"]}, expect=404)


def test_delete_before_work_started_refunds() -> None:
    with start_emulator(EmulatorConfig(time_scale=1000, buzz=100)) as emu, \
            httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"}) as client:
        api = Api(client, openapi_or_none())
        workflow = api.submit({"steps": [image_step(size=1024)]}, wait=0, expect=202)
        assert emu.counters()["buzz_balance"] == 92
        api.call("DELETE", WF, path={"workflowId": workflow["id"]}, expect=204)
        assert emu.counters()["buzz_balance"] == 100
        assert emu.counters()["buzz_charged"] == 0
