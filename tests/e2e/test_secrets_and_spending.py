"""The API key never leaves the process, and nothing is spent without consent or funds."""

from __future__ import annotations

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from tests.e2e.support import (
    CHAIN,
    MODEL,
    SECRET,
    WORKFLOWS,
    Project,
    aim,
    created,
    requests_to,
    spawn,
)


def test_the_key_is_in_no_byte_civflow_writes_or_prints(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    outputs = [project.run("chain"), project.run("chain", "--force", "clip"),
               project.cli("status", "pipelines/chain.yaml"),
               project.cli("plan", "pipelines/chain.yaml")]
    assert all(o.code == 0 for o in outputs), [o.text for o in outputs]
    # A subprocess too, so nothing printed outside pytest's capture escapes the check.
    process = spawn(project, emulator, "chain", "--force", "hero", log="sub")
    assert process.wait(timeout=60) == 0
    files = list(project.written_files())
    assert any(p.suffix == ".mp4" for p in files) and any(p.name == "journal.jsonl"
                                                          for p in files)
    needle = SECRET.encode()
    for path in files:
        assert needle not in path.read_bytes(), path
    for outcome in outputs:
        assert SECRET not in outcome.text


def test_a_wrong_key_is_exit_3_and_never_echoed(project: Project, emulator: RunningEmulator,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-test-WRONG-0123456789abcdef"
    aim(monkeypatch, emulator, key=wrong)
    project.write("chain", CHAIN)
    outcome = project.run("chain")
    assert outcome.code == 3, outcome.text
    # Not "401 or key": every exit 3 carries the key hint, so that could not fail.
    assert "the API refused the key (401 Unauthorized)" in outcome.err, outcome.err
    assert wrong not in outcome.text and SECRET not in outcome.text
    assert "Traceback" not in outcome.text
    assert created(emulator) == 0


def test_no_key_at_all_is_exit_3(project: Project, emulator: RunningEmulator,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CIVITAI_API_KEY")
    project.write("chain", CHAIN)
    outcome = project.run("chain")
    assert outcome.code == 3 and "CIVITAI_API_KEY" in outcome.err, outcome.text


def test_non_interactive_run_without_yes_spends_nothing(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    outcome = project.cli("run", "pipelines/chain.yaml")
    assert outcome.code == 8, outcome.text
    assert "--yes" in outcome.err
    assert "estimated cost" in outcome.err  # the plan and its whatif price were shown
    assert created(emulator) == 0
    assert not project.lock_path("chain").exists()


def test_max_cost_below_the_estimate_refuses_before_submitting(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    outcome = project.run("chain", "--max-cost", "5")
    assert outcome.code == 8, outcome.text
    assert "--max-cost" in outcome.err
    assert created(emulator) == 0
    # With room for the estimate the same run goes through.
    assert project.run("chain", "--max-cost", "100000").code == 0


def test_too_little_buzz_is_exit_8(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    # 5 Buzz pays for the cheap images and upscales, not for the video. One workflow per
    # instance (fused, the chain is one workflow the API refuses whole: nothing is paid).
    with start_emulator(EmulatorConfig(announce=False, time_scale=0, api_key=SECRET,
                                       buzz=5)) as poor:
        aim(monkeypatch, poor)
        project.write("chain", CHAIN)
        outcome = project.run("chain", "--batch", "1")
        counters = poor.counters()
    assert outcome.code == 8, outcome.text
    assert "Traceback" not in outcome.text
    assert counters["workflows_created"] == 3
    assert counters["requests"][WORKFLOWS].get("403", 0) >= 1
    # What was paid for is kept: a top-up and a re-run submit only the video.
    paid = sorted(project.lock("chain")["instances"])
    assert len(paid) == 3 and paid[0] == "hero" and all(n.startswith("upscale[") for n in paid[1:])


def test_an_unknown_air_is_exit_4_before_anything_is_spent(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    typo = MODEL.replace("128078", "128079")
    emulator.forget_air(typo)  # any well-formed AIR exists unless the emulator is told
    project.write("chain", CHAIN.replace(MODEL, typo))
    outcome = project.run("chain")
    assert outcome.code == 4, outcome.text
    assert typo in outcome.err
    assert requests_to(emulator, WORKFLOWS) == 0  # not even a whatif
    assert created(emulator) == 0



def test_a_normal_key_never_alters_recorded_data(project: Project,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21: with a short key, the prompt 'tea campaign key visual' was recorded as
    'tea campaign <redacted>ey visual' and blob URLs broke. Keys are now at least 16
    characters, and only what civflow shows is blanked: a key that even appears in an
    echoed output is recorded as the API answered it, never printed."""
    key = "k3y-visual-0123456789abcdef"
    prompt = f"a tea campaign key visual; echoed back: {key}"
    with start_emulator(EmulatorConfig(announce=False, time_scale=0, api_key=key)) as api:
        aim(monkeypatch, api, key)
        project.write("echo", f"version: 1\nname: echo\nsteps:\n  say:\n    type: echo\n"
                              f"    input:\n      message: \"{prompt}\"\n")
        done = project.run("echo")
        assert done.code == 0, done.text
        entry = project.lock("echo")["instances"]["say"]
        assert entry["request"]["input"]["message"] == prompt
        assert entry["output"]["message"] == prompt  # the answer, as sent
        assert key not in done.text
