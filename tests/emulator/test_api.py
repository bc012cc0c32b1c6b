"""Every emulator operation over real HTTP, each JSON answer checked against the spec."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
from PIL import Image

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.emulator.conftest import PREFIX, Api, echo_step, image_step, openapi_or_none
from tests.openapi_support import require_shared

SEED_REQUEST = Path(__file__).resolve().parents[3] / "shared" / "seed-request.json"
WF = f"{PREFIX}/workflows/{{workflowId}}"


def test_submit_with_wait_returns_finished_workflow_with_images(api: Api) -> None:
    body = {"currencies": [], "tags": ["demo"], "steps": [image_step(quantity=2)]}
    workflow = api.submit(body, wait=30)
    assert workflow["status"] == "succeeded"
    assert workflow["id"].startswith("0-") and workflow["id"][2:].isdigit()
    step = workflow["steps"][0]
    assert step["name"] == "hero" and step["status"] == "succeeded"
    images = step["output"]["images"]
    assert len(images) == 2
    for image in images:
        assert image["available"] is True and image["type"] == "image"
        assert image["width"] == 256 and image["height"] == 256
        assert "sig=" in image["url"] and "exp=" in image["url"]
        assert image["jobId"] in {job["id"] for job in step["jobs"]}
    assert workflow["cost"]["total"] >= 1
    assert workflow["transactions"]["list"][0]["amount"] == workflow["cost"]["total"]


def test_submit_without_wait_is_202_then_get_with_wait_is_200(emulator: RunningEmulator,
                                                              api: Api) -> None:
    emulator.set_faults(time_scale=0.05)  # an echo then takes 25 ms of simulated time
    first = api.submit({"steps": [echo_step("hi")]}, wait=0, expect=202)
    assert first["status"] in ("unassigned", "preparing", "scheduled", "processing")
    assert all("output" not in step for step in first["steps"])
    done = api.get(first["id"], wait=30)
    assert done.status_code == 200
    assert done.json()["steps"][0]["output"] == {"message": "hi"}
    assert done.json()["steps"][0]["name"] == "$0"


def test_wait_elapsing_gives_202_snapshot_without_outputs(emulator: RunningEmulator,
                                                          api: Api) -> None:
    emulator.set_faults(time_scale=1000)  # nothing finishes during this test
    workflow = api.submit({"steps": [echo_step()]}, wait=1, expect=202)
    assert workflow["status"] not in ("succeeded", "failed", "expired", "canceled")
    assert api.get(workflow["id"], wait=1).status_code == 202


def test_list_pages_with_cursor_and_filters_by_tag(api: Api) -> None:
    ids = [api.submit({"steps": [echo_step(str(i))], "tags": ["batch", f"n{i}"]})["id"]
           for i in range(5)]
    api.submit({"steps": [echo_step("other")], "tags": ["other"]})
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params: dict[str, object] = {"tags": "batch", "take": 2}
        if cursor:
            params["cursor"] = cursor
        page = api.call("GET", f"{PREFIX}/workflows", expect=200, params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each exactly once
    both = api.call("GET", f"{PREFIX}/workflows", expect=200,
                    params=[("tags", "batch"), ("tags", "n3")]).json()
    assert [item["id"] for item in both["items"]] == [ids[3]]


def test_whatif_prices_without_creating(emulator: RunningEmulator, api: Api) -> None:
    body = {"steps": [image_step(size=1024)], "externalId": "whatif-then-real"}
    priced = api.submit(body, wait=0, whatif="true")
    assert priced["id"] is None
    assert priced["cost"]["total"] == 8  # 8 × 1 MP × 20/20 steps × 1
    assert priced["transactions"]["insufficientBuzz"] is False
    assert priced["steps"][0]["jobs"][0]["queuePosition"]["support"] == "available"
    assert emulator.counters()["workflows_created"] == 0
    # The whatif recorded nothing, so the same key now creates the workflow.
    created = api.submit(body, wait=30)
    assert created["id"] and emulator.counters()["workflows_created"] == 1


def test_external_id_returns_the_same_workflow_once(emulator: RunningEmulator, api: Api) -> None:
    body = {"steps": [echo_step()], "externalId": "run-1_a"}
    first = api.submit(body)
    again = api.submit(body)
    assert again["id"] == first["id"]
    counters = emulator.counters()
    assert counters["workflows_created"] == 1
    assert counters["external_id_hits"] == 1
    assert counters["creations_by_external_id"] == {"run-1_a": 1}


def test_step_endpoint_with_percent_encoded_name(api: Api) -> None:
    workflow = api.submit({"steps": [echo_step("x")]})
    step = api.call("GET", f"{WF}/steps/{{stepName}}", expect=200,
                    path={"workflowId": workflow["id"], "stepName": "$0"}).json()
    assert step["name"] == "$0" and step["output"] == {"message": "x"}
    api.call("GET", f"{WF}/steps/{{stepName}}", expect=404,
             path={"workflowId": workflow["id"], "stepName": "$9"})


def test_cancel_then_delete(emulator: RunningEmulator, api: Api) -> None:
    emulator.set_faults(time_scale=1000)
    workflow = api.submit({"steps": [echo_step()]}, wait=0, expect=202)
    ref = {"workflowId": workflow["id"]}
    api.call("PUT", WF, path=ref, expect=204, json={"status": "canceled"})
    canceled = api.get(workflow["id"]).json()
    assert canceled["status"] == "canceled"
    assert canceled["steps"][0]["status"] == "canceled"
    assert canceled["steps"][0]["jobs"][0]["status"] == "canceled"
    api.call("PUT", WF, path=ref, expect=204, json={"metadata": {"k": "v"}, "tags": ["x"]})
    updated = api.get(workflow["id"]).json()
    assert updated["metadata"] == {"k": "v"} and updated["tags"] == ["x"]
    api.call("DELETE", WF, path=ref, expect=204)
    api.call("GET", WF, path=ref, expect=404)
    api.call("DELETE", WF, path=ref, expect=404)


def test_blob_get_redirects_to_bytes_and_refresh_and_head(api: Api) -> None:
    workflow = api.submit({"steps": [image_step(fmt="png")]})
    image = workflow["steps"][0]["output"]["images"][0]
    redirect = api.client.get(image["url"], headers={"Authorization": ""})
    assert redirect.status_code == 308
    content = api.client.get(redirect.headers["location"])
    assert content.status_code == 200
    assert content.headers["content-type"] == "image/png"
    assert int(content.headers["content-length"]) == len(content.content)
    assert Image.open(io.BytesIO(content.content)).size == (256, 256)
    blob = {"blobId": image["id"]}
    by_bearer = api.call("GET", f"{PREFIX}/blobs/{{blobId}}", path=blob, expect=308)
    assert "/blobs/content/" in by_bearer.headers["location"]
    api.call("HEAD", f"{PREFIX}/blobs/{{blobId}}", path=blob, expect=204)
    fresh = api.call("POST", f"{PREFIX}/blobs/{{blobId}}/refresh", path=blob, expect=200).json()
    assert fresh["id"] == image["id"] and fresh["url"] and fresh["available"]
    api.call("GET", f"{PREFIX}/blobs/{{blobId}}", path={"blobId": "NOPE.png"}, expect=404)


def test_bad_or_expired_signature_is_403(emulator: RunningEmulator, api: Api) -> None:
    workflow = api.submit({"steps": [image_step()]})
    url = workflow["steps"][0]["output"]["images"][0]["url"]
    tampered = url.replace("sig=", "sig=x")
    denied = api.client.get(tampered, headers={"Authorization": ""})
    assert denied.status_code == 403
    assert denied.headers["content-type"].startswith("application/problem+json")
    emulator.expire_urls()
    assert api.client.get(url, headers={"Authorization": ""}).status_code == 403
    # Re-reading the workflow gives URLs that work again.
    again = api.get(workflow["id"]).json()["steps"][0]["output"]["images"][0]["url"]
    assert api.client.get(again, headers={"Authorization": ""}).status_code == 308


def test_upload_direct_and_presigned(api: Api) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, "PNG")
    uploaded = api.call("POST", f"{PREFIX}/blobs", expect=201, content=buffer.getvalue(),
                        headers={"Content-Type": "image/png"}).json()
    assert uploaded["width"] == 40 and uploaded["height"] == 30 and uploaded["available"]
    presigned = api.call("GET", f"{PREFIX}/blobs/upload", expect=200).json()
    anonymous = httpx.post(presigned["uploadUrl"], content=buffer.getvalue(),
                           headers={"Content-Type": "image/png"})
    assert anonymous.status_code == 201
    api.call("POST", f"{PREFIX}/blobs", expect=415, content=b"text",
             headers={"Content-Type": "text/plain"})
    api.call("POST", f"{PREFIX}/blobs", expect=422, content=b"not a png",
             headers={"Content-Type": "image/png"})
    # The uploaded image feeds a step like any other URL.
    upscaled = api.submit({"steps": [{"$type": "imageUpscaler",
                                      "input": {"image": uploaded["url"]}}]})
    assert upscaled["steps"][0]["output"]["blob"]["width"] == 80


def test_resources(emulator: RunningEmulator, api: Api) -> None:
    for air in ("urn:air:sdxl:checkpoint:civitai:101055@128078",
                "urn:air:sdxl:lora:civitai:200000@250000",
                "urn:air:sdxl:lora:civitai:123456@789012",
                "urn:air:other:upscaler:civitai:147759@164821",
                "urn:air:flux1:diffuser:civitai:618692@691639",
                "urn:air:flux1:checkpoint:civitai:618692@691639",
                "urn:air:sd1:checkpoint:civitai:4384@128713",
                "urn:air:sd1:embedding:civitai:7808@9208"):
        info = api.call("GET", "/v2/resources/{air}", path={"air": air}, expect=200).json()
        assert info["air"] == air and info["canGenerate"] is True
    # Any well-formed AIR exists (a studio's own models work in a dry run) ...
    mine = api.call("GET", "/v2/resources/{air}",
                    path={"air": "urn:air:sdxl:lora:civitai:1@1"}, expect=200).json()
    assert mine["air"] == "urn:air:sdxl:lora:civitai:1@1"
    api.call("GET", "/v2/resources/{air}", path={"air": "not-an-air"}, expect=404)
    # ... unless the emulator is told it is missing.
    emulator.forget_air("urn:air:sdxl:lora:civitai:1@1")
    api.call("GET", "/v2/resources/{air}", path={"air": "urn:air:sdxl:lora:civitai:1@1"},
             expect=404)


def test_seed_request_gets_400_about_engine(api: Api) -> None:
    require_shared(SEED_REQUEST)
    body = json.loads(SEED_REQUEST.read_text())["request"]["body"]
    problem = api.submit(body, expect=400)
    assert problem["title"] == "One or more validation errors occurred."
    assert problem["status"] == 400
    # Unknown top-level members (callbackUrl, detailed) are ignored, like System.Text.Json.
    assert list(problem["errors"]) == ["steps[0].input.engine"]


def test_validation_errors(api: Api) -> None:
    cases = [
        ({"steps": []}, "steps"),
        ({"steps": [echo_step()], "tags": [str(i) for i in range(11)]}, "tags"),
        ({"steps": [echo_step()], "tags": ["a", "a"]}, "tags"),
        ({"steps": [echo_step()], "tags": ["x" * 201]}, "tags"),
        ({"steps": [echo_step()], "externalId": "has space"}, "externalId"),
        ({"steps": [{"$type": "noSuchStep", "input": {}}]}, "steps[0].$type"),
        ({"steps": [echo_step(), {"$type": "echo", "input": {
            "message": {"$ref": "missing", "path": "output.message"}}}]},
         "steps[1].input.message"),
    ]
    for body, key in cases:
        problem = api.submit(body, expect=400)
        assert key in problem["errors"], (body, problem)
    assert api.client.post(f"{PREFIX}/workflows", content=b"{nope").status_code == 400


def test_auth_401_and_required_key() -> None:
    spec = openapi_or_none()
    with start_emulator(EmulatorConfig(time_scale=0, api_key="right")) as emu, \
            httpx.Client(base_url=emu.url) as client:
        api = Api(client, spec)
        body = {"json": {"steps": [echo_step()]}}
        api.call("POST", f"{PREFIX}/workflows", expect=401, **body)
        api.call("POST", f"{PREFIX}/workflows", expect=401,
                 headers={"Authorization": "Bearer wrong"}, **body)
        api.call("GET", f"{PREFIX}/workflows", expect=401)
        ok = api.call("POST", f"{PREFIX}/workflows", headers={"Authorization": "Bearer right"},
                      params={"wait": 30}, **body)
        assert ok.status_code == 200


def test_insufficient_buzz_is_403_string_and_whatif_flags_it() -> None:
    spec = openapi_or_none()
    with start_emulator(EmulatorConfig(time_scale=0, buzz=10)) as emu, \
            httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"}) as client:
        api = Api(client, spec)
        big = {"steps": [image_step(size=1024, quantity=2)]}  # 16 Buzz
        refused = api.submit(big, expect=403)
        assert isinstance(refused, str) and "buzz" in refused.lower()
        priced = api.submit(big, whatif="true")
        assert priced["transactions"]["insufficientBuzz"] is True
        small = {"steps": [image_step(size=1024)]}  # 8 Buzz
        api.submit(small)
        assert emu.counters()["buzz_balance"] == 2
        assert emu.counters()["buzz_charged"] == 8


def test_rate_limit_429_with_retry_after(emulator: RunningEmulator, api: Api) -> None:
    emulator.set_faults(rate_limit=1.0)
    # Submit is the operation that declares 429, so its body is schema-checked.
    limited = api.call("POST", f"{PREFIX}/workflows", expect=429, json={"steps": [echo_step()]})
    assert limited.headers["retry-after"] == "1"
    emulator.set_faults(rate_limit=0.0, rate_limit_rps=1.0)
    statuses = [api.client.get(f"{PREFIX}/workflows").status_code for _ in range(5)]
    assert 429 in statuses and statuses[0] == 200
    counters = emulator.counters()["requests"]["GET /v2/consumer/workflows"]
    assert counters["429"] >= 2
    if api.spec is not None:  # the 429 body was schema-checked against the document
        assert api.checked
