"""What the emulator's shortcuts per step must not change: a step input checked once is
answered the same way every time after, steps that run side by side still move through
every status on their own, and a finished step's answer still follows what can change."""

from __future__ import annotations

import time
from typing import Any

import httpx

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.emulator.conftest import PREFIX, Api, echo_step, openapi_or_none


def _errors(api: Api, steps: list[dict[str, Any]], **params: Any) -> dict[str, list[str]]:
    problem = api.submit({"steps": steps}, expect=400, **params)
    errors: dict[str, list[str]] = problem["errors"]
    return errors


def test_a_rejected_input_gets_the_same_errors_every_time_it_is_sent(api: Api) -> None:
    """Promise (validation fidelity): the emulator remembers the catalog's findings per
    identical input, yet a whatif and a real submit of the same input, and the same input
    sent again, get the same errors word for word; inputs whose JSON differs only in type
    (1, 1.0, true) are not mistaken for one another."""
    ones = [{"$type": "echo", "name": "int", "input": {"message": 1}},
            {"$type": "echo", "name": "float", "input": {"message": 1.0}},
            {"$type": "echo", "name": "bool", "input": {"message": True}},
            {"$type": "echo", "name": "typo", "input": {"mesage": "hi"}}]
    expected = {
        "steps[0].input.message": ["'message' must be a string, got 1"],
        "steps[1].input.message": ["'message' must be a string, got 1.0"],
        "steps[2].input.message": ["'message' must be a string, got true"],
        "steps[3].input.mesage": ["'mesage' is not a field of echo"],
    }
    assert _errors(api, ones, whatif="true") == expected
    assert _errors(api, ones) == expected
    assert _errors(api, ones[::-1]) == {
        "steps[0].input.mesage": ["'mesage' is not a field of echo"],
        "steps[1].input.message": ["'message' must be a string, got true"],
        "steps[2].input.message": ["'message' must be a string, got 1.0"],
        "steps[3].input.message": ["'message' must be a string, got 1"],
    }
    # A valid input seen before is still accepted, next to a rejected one it is not.
    assert _errors(api, [echo_step("fine"), ones[0]]) == {
        "steps[1].input.message": ["'message' must be a string, got 1"]}
    done = api.submit({"steps": [echo_step("fine")]})
    assert done["status"] == "succeeded"


def test_many_inputs_keep_being_checked_after_the_oldest_are_forgotten(
        emulator: RunningEmulator, api: Api) -> None:
    """Promise (bounded memory, same answers): the remembered findings are bounded; once
    older inputs are forgotten they are checked again and answered as before."""
    from civflow.emulator import _pricing

    kept = _pricing._CHECKS_KEPT
    bad = {"$type": "echo", "name": "bad", "input": {"message": 7}}
    assert _errors(api, [bad]) == {"steps[0].input.message": ["'message' must be a string, "
                                                              "got 7"]}
    # More distinct inputs than are kept, priced with whatif in batches of 500 steps.
    for start in range(0, kept + 500, 500):
        steps = [echo_step(f"m{i}", name=f"s{i}") for i in range(start, start + 500)]
        answer = api.client.post(f"{PREFIX}/workflows", json={"steps": steps},
                                 params={"whatif": "true"})
        assert answer.status_code == 200, answer.text
    assert len(_pricing._CHECKS._found) <= kept
    assert _errors(api, [bad]) == {"steps[0].input.message": ["'message' must be a string, "
                                                              "got 7"]}
    assert emulator.counters()["workflows_created"] == 0


def _served(**config: Any) -> Any:
    return start_emulator(EmulatorConfig(**config))


def _client(emu: RunningEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.url, headers={"Authorization": "Bearer k"}, timeout=60)


def _fates(seed: int) -> list[str]:
    """Step statuses of one 20-step batch when each step fails with probability 1/2."""
    steps = [echo_step(f"m{i}", name=f"s{i}") for i in range(20)]
    with _served(time_scale=0.02, step_failure_rate=0.5, fault_seed=seed) as emu, \
            _client(emu) as client:
        api = Api(client, openapi_or_none())
        workflow = api.submit({"steps": steps})
    for step in workflow["steps"]:
        assert [job["status"] for job in step["jobs"]] == [step["status"]]
        assert step["startedAt"] and step["completedAt"]
        assert ("output" in step) == (step["status"] == "succeeded")
    assert workflow["status"] == ("failed" if "failed" in
                                  {s["status"] for s in workflow["steps"]} else "succeeded")
    return [step["status"] for step in workflow["steps"]]


def test_steps_that_run_side_by_side_keep_their_own_fates() -> None:
    """Promise (fault fidelity): steps of one batch share the emulator's timers, yet each
    draws its own fate: with a failure rate of 1/2 some fail and the others succeed, each
    step's job says so, only the succeeded ones carry an output, and the same seed gives
    the same fates again."""
    fates = _fates(3)
    assert set(fates) == {"failed", "succeeded"}
    assert _fates(3) == fates


def test_a_step_fed_by_two_batch_mates_starts_once_with_both_values() -> None:
    """Promise (`$ref` fidelity): when the sources of a step finish in the same instant
    (they share a timer), the step starts once, after both, with both values; steps of
    different lengths in one workflow still finish each at its own time."""
    body = {"steps": [
        echo_step("left", name="x"), echo_step("right", name="y"),
        {"$type": "chatCompletion", "name": "z", "input": {"model": "gpt-4o-mini", "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": {"$ref": "x", "path": "output.message"}},
                {"type": "text", "text": {"$ref": "y", "path": "output.message"}}]}]}},
        {"$type": "promptEnhancement", "name": "slow", "timeout": "00:00:00.2",
         "input": {"prompt": "a lighthouse", "ecosystem": "sdxl"}},
    ]}
    with _served(time_scale=0.05) as emu, _client(emu) as client:
        api = Api(client, openapi_or_none())
        workflow = api.submit(body)
        counters = emu.counters()
    steps = {step["name"]: step for step in workflow["steps"]}
    assert [steps[n]["status"] for n in "xyz"] == ["succeeded"] * 3
    parts = steps["z"]["input"]["messages"][0]["content"]
    assert [part["text"] for part in parts] == ["left", "right"]
    assert steps["z"]["output"]["choices"][0]["message"]["content"] == \
        "Emulated answer to: left right"
    assert steps["z"]["startedAt"] >= max(steps["x"]["completedAt"], steps["y"]["completedAt"])
    # 2 s of simulated work cut off by its 0.2 s timeout: expired, alone.
    assert steps["slow"]["status"] == "expired"
    assert workflow["status"] == "expired"
    assert counters["step_creations"] == {"x": 1, "y": 1, "z": 1, "slow": 1}


def test_a_canceled_batch_stays_canceled() -> None:
    """Promise (lifecycle fidelity): canceling a workflow whose steps share a timer stops
    them all; nothing moves afterwards, even once their time would have come."""
    steps = [echo_step(f"m{i}", name=f"s{i}") for i in range(5)]
    with _served(time_scale=0.2) as emu, _client(emu) as client:
        api = Api(client, openapi_or_none())
        created = api.submit({"steps": steps}, wait=0, expect=202)
        api.call("PUT", f"{PREFIX}/workflows/{{workflowId}}", path={"workflowId": created["id"]},
                 json={"status": "canceled"}, expect=204)
        first = api.get(created["id"]).json()
        time.sleep(0.3)  # past the 0.1 s these steps would have taken
        later = api.get(created["id"]).json()
    assert first["status"] == "canceled"
    assert {s["status"] for s in first["steps"]} == {"canceled"}
    assert later == first


def test_a_finished_step_still_shows_its_new_metadata(api: Api) -> None:
    """Promise (answer fidelity): a finished step is rendered once and reused, yet a
    metadata update made after it finished shows in the workflow and in the step, and
    both show the same step."""
    workflow = api.submit({"steps": [echo_step("kept", name="only",
                                               metadata={"round": 1})]})
    path = {"workflowId": workflow["id"], "stepName": "only"}
    step_url = f"{PREFIX}/workflows/{{workflowId}}/steps/{{stepName}}"
    before = api.call("GET", step_url, path=path, expect=200).json()
    assert before == workflow["steps"][0]
    assert before["metadata"] == {"round": 1}
    api.call("PUT", step_url, path=path, json={"metadata": {"round": 2}}, expect=204)
    after = api.call("GET", step_url, path=path, expect=200).json()
    listed = api.get(workflow["id"]).json()["steps"][0]
    assert after == listed == {**before, "metadata": {"round": 2}}
    assert list(after) == list(before)  # the same members in the same order
    assert after["output"] == {"message": "kept"}
