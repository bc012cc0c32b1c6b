"""What the emulator's shortcuts per step must not change: a step input checked once is
answered the same way every time after, steps that run side by side still move through
every status on their own, and a finished step's answer still follows what can change."""

from __future__ import annotations

from typing import Any

from civflow.emulator import RunningEmulator
from tests.emulator.conftest import PREFIX, Api, echo_step


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
