"""The money promises under misuse and races: each test names the promise it guards.

All over real HTTP against the emulator (or, where the emulator must not misbehave, a
small hostile server on 127.0.0.1); the emulator's counters prove what was created and
charged.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from civflow.check import check_pipeline
from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.expand import derive_seed
from civflow.loading import load_pipeline
from civflow.runner.lock import run_lock
from civflow.store.journal import Journal, external_id
from tests.e2e.support import CHAIN, MODEL, SECRET, Project, aim, created, spawn

# A clip whose seed is unset: two runs used to draw two seeds and pay twice.
CLIP = """\
version: 1
name: clip
steps:
  clip:
    type: videoGen
    input:
      engine: wan
      version: v2.6
      provider: fal
      cfgScale: 4
      operation: text-to-video
      prompt: a waterfall in the fog
      resolution: 720p
      duration: 5
"""

# A fast image and a slow video: a crash lands while the video is in flight.
HERO_AND_CLIP = f"""\
version: 1
name: pair
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: a lighthouse
      width: 256
      height: 256
      steps: 10
  clip:
    type: videoGen
    input:
      engine: wan
      version: v2.6
      provider: fal
      cfgScale: 4
      operation: text-to-video
      prompt: a waterfall in the fog
      resolution: 720p
      duration: 5
"""

# 32 Buzz of images, then a fan-out of four 2-Buzz upscales the plan cannot count yet
# (the `| list` hides that its size is hero's quantity).
FAN_OUT = f"""\
version: 1
name: fanout
steps:
  hero:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: four tiles
      width: 1024
      height: 1024
      steps: 20
      quantity: 4
  up:
    type: imageUpscaler
    foreach: "{{{{ steps.hero.output.images | list }}}}"
    input:
      image: "{{{{ item.url }}}}"
      numberOfRepeats: 1
"""


def charged(emulator: RunningEmulator) -> float:
    return float(emulator.counters()["buzz_charged"])


def once_each(emulator: RunningEmulator) -> dict[str, int]:
    per_key: dict[str, int] = emulator.counters()["creations_by_external_id"]
    assert all(n == 1 for n in per_key.values()), per_key
    return per_key


@pytest.fixture
def slow(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningEmulator]:
    """A video takes about 30 s: a concurrent run or a crash lands while it is in flight."""
    with start_emulator(EmulatorConfig(announce=False, time_scale=1, api_key=SECRET)) as running:
        aim(monkeypatch, running)
        yield running


def _wait_for(condition: Any, seconds: float = 30.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return False


# -- paid twice ------------------------------------------------------------------------


def test_two_checkouts_derive_the_same_work_and_pay_once(
        tmp_path: Path, ready: tuple[Project, RunningEmulator],
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: never paid twice. A laptop and CI (no shared journal or lockfile) derive
    the same seed for an unset `seed`, so the same member key: CI finds the laptop's
    workflow by its step's set tag (or, racing it, gets it back by the same externalId)
    and pays nothing."""
    laptop, emulator = ready
    laptop.write("clip", CLIP)
    assert laptop.run("clip").code == 0
    ci_root = tmp_path / "ci"
    ci_root.mkdir()
    monkeypatch.chdir(ci_root)
    ci = Project(ci_root, capsys)
    ci.write("clip", CLIP)
    assert ci.run("clip").code == 0
    assert created(emulator) == 1
    assert laptop.lock("clip")["instances"]["clip"]["seed"] == derive_seed("clip", "clip")
    assert ci.lock("clip") == laptop.lock("clip")


def test_a_second_run_of_a_pipeline_in_progress_exits_9_and_never_pays(
        project: Project, slow: RunningEmulator) -> None:
    """Promise: never paid twice. Two `civflow run` at once: the second is refused by the
    run lock (exit 9, naming the holder); after the holder is killed the lock is free
    and the next run re-attaches: one workflow, one charge."""
    project.write("clip", CLIP)
    first = spawn(project, slow, "clip", log="first")
    assert _wait_for(lambda: created(slow) == 1), (project.root / "first.err").read_text()
    second = project.run("clip")
    assert second.code == 9, second.text
    assert f"pid {first.pid}" in second.err and "--wait" in second.err
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    slow.set_faults(time_scale=0)
    third = project.run("clip")
    assert third.code == 0, third.text
    assert created(slow) == 1 and len(once_each(slow)) == 1
    assert charged(slow) == pytest.approx(650.0)


def test_wait_queues_behind_the_run_in_progress(project: Project, slow: RunningEmulator) -> None:
    """Promise: never paid twice. `--wait` plans only after the other run ended, so it
    finds everything cached."""
    project.write("clip", CLIP)
    slow.set_faults(time_scale=0.05)
    first = spawn(project, slow, "clip", log="first")
    assert _wait_for(lambda: created(slow) == 1)
    waited = project.run("clip", "--wait")
    assert first.wait(timeout=60) == 0
    assert waited.code == 0, waited.text
    assert "waiting for the run in progress" in waited.err and "1 cached" in waited.err
    assert created(slow) == 1


def test_only_after_a_crash_settles_the_interrupted_runs_work(
        project: Project, slow: RunningEmulator) -> None:
    """Promise: never paid twice. `run --only hero` after a crash still settles the clip
    the crashed run paid for: its output lands in the lockfile, and the next full run
    submits nothing."""
    project.write("pair", HERO_AND_CLIP)
    process = spawn(project, slow, "pair", log="crash")
    assert _wait_for(lambda: created(slow) == 2), (project.root / "crash.err").read_text()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    slow.set_faults(time_scale=0)
    only = project.run("pair", "--only", "hero")
    assert only.code == 0, only.text
    lock = project.lock("pair")["instances"]
    assert set(lock) == {"hero", "clip"}
    assert lock["clip"]["seed"] == derive_seed("pair", "clip")
    full = project.run("pair")
    assert full.code == 0 and "2 cached" in full.err, full.text
    assert created(slow) == 2 and len(once_each(slow)) == 2


# -- a guard that fails ------------------------------------------------------------------


WHEN_RAISES = f"""\
version: 1
name: guarded
steps:
  score:
    type: echo
    input:
      message: "high"
  paid:
    type: imageGen
    when: "{{{{ steps.score.output.message > 10 }}}}"
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: only when the score is high
      width: 256
      height: 256
"""


def test_a_when_that_raises_fails_its_step_and_never_runs_it(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: nothing is spent on a broken guard: a `when` that cannot be evaluated on
    the real outputs is a located failure of its step (exit 7), not a green light."""
    project, emulator = ready
    project.write("guarded", WHEN_RAISES)
    outcome = project.run("guarded")
    assert outcome.code == 7, outcome.text
    assert "pipelines/guarded.yaml:" in outcome.err and "Traceback" not in outcome.text
    assert created(emulator) == 1  # the echo only
    assert "paid" in outcome.err


# -- over budget -------------------------------------------------------------------------


def test_max_cost_is_a_hard_cap_on_a_fan_out(ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: the cost is capped. The plan cannot see the fan-out's size, so each POST
    reserves its estimate: charged + in flight never passes the cap; exit 8 names what
    was spent and skipped and how to go on."""
    project, emulator = ready
    project.write("fanout", FAN_OUT)
    outcome = project.run("fanout", "--max-cost", "37")
    assert outcome.code == 8, outcome.text
    assert charged(emulator) <= 37
    assert created(emulator) == 3  # hero and two upscales; two more would pass the cap
    assert "stopped at the cap" in outcome.err and "2 instance(s) not submitted" in outcome.err
    assert "civflow run --max-cost N pipelines/fanout.yaml" in outcome.err
    # Raising the cap continues where it stopped.
    more = project.run("fanout", "--max-cost", "100")
    assert more.code == 0, more.text
    assert created(emulator) == 5


def test_a_fan_out_of_known_size_is_priced_whole_before_anything_is_spent(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: the cost is known before spending: a fan-out over hero's images counts
    hero's quantity, so the plan is refused up front rather than stopped halfway."""
    project, emulator = ready
    project.write("fanout", FAN_OUT.replace(" | list", ""))
    shown = project.cli("plan", "pipelines/fanout.yaml")
    assert "estimated 40 Buzz" in shown.out and "4 expected" in shown.out, shown.text
    outcome = project.run("fanout", "--max-cost", "37")
    assert outcome.code == 8 and "estimated at 40 Buzz" in outcome.err, outcome.text
    assert created(emulator) == 0


@pytest.mark.parametrize("cap", ["nan", "inf", "-5"])
def test_a_cap_that_is_not_a_finite_amount_is_a_usage_error(
        ready: tuple[Project, RunningEmulator], cap: str) -> None:
    """Promise: the cost is capped. `--max-cost nan` would compare false and cap nothing."""
    project, emulator = ready
    project.write("fanout", FAN_OUT)
    outcome = project.run("fanout", f"--max-cost={cap}")
    assert outcome.code == 2, outcome.text
    assert created(emulator) == 0


# -- stuck states, wrong answers -----------------------------------------------------------


def _journal_intent(project: Project, name: str, workflow_id: str) -> None:
    """A run that submitted `name`'s only instance and died before it finished."""
    checked = check_pipeline(load_pipeline(project.root / "pipelines" / f"{name}.yaml"))
    from civflow.runner import prepare

    planned = prepare(checked).plan.instances[0]
    fp = planned.instance.fingerprint
    assert fp is not None
    journal = Journal.create(project.root / ".civflow" / "runs", name)
    journal.append({"event": "run-started", "pipeline": name})
    journal.append({"event": "intent", "instance": planned.name, "fingerprint": fp,
                    "externalId": external_id(fp, 1), "attempt": 1})
    journal.append({"event": "submitted", "instance": planned.name,
                    "workflowId": workflow_id})


def test_a_vanished_workflow_is_reported_and_resubmitted_once(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: no stuck state. A journaled workflow the server no longer has (404) is
    reported, and the instance (priced as new by the plan the run showed) is submitted
    anew with a new externalId, once, like a lost batch's unfinished members."""
    project, emulator = ready
    project.write("clip", CLIP)
    _journal_intent(project, "clip", "wf-that-is-gone")
    first = project.run("clip")
    assert first.code == 0, first.text
    assert "wf-that-is-gone no longer exists" in first.err
    assert created(emulator) == 1
    assert next(iter(once_each(emulator))).endswith("-2")
    second = project.run("clip")
    assert second.code == 0 and "1 cached" in second.err, second.text
    assert created(emulator) == 1


def test_cancel_needs_no_key_when_there_is_nothing_to_cancel(
        ready: tuple[Project, RunningEmulator], monkeypatch: pytest.MonkeyPatch) -> None:
    project, _emulator = ready
    project.write("clip", CLIP)
    assert project.run("clip").code == 0
    monkeypatch.delenv("CIVITAI_API_KEY")
    outcome = project.cli("cancel", "pipelines/clip.yaml")
    assert outcome.code == 0 and "nothing to cancel" in outcome.out, outcome.text


def test_an_out_folder_that_is_a_file_fails_before_paying(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("clip", CLIP)
    (project.root / "taken").write_text("not a folder")
    outcome = project.run("clip", "--out", "taken")
    assert outcome.code == 1 and "is not a folder" in outcome.err, outcome.text
    assert created(emulator) == 0


def test_an_only_glob_that_matches_nothing_fails(ready: tuple[Project, RunningEmulator]) -> None:
    """A typo in CI must fail, not report "nothing to do"."""
    project, emulator = ready
    project.write("chain", CHAIN)
    outcome = project.run("chain", "--only", "upscal")
    assert outcome.code == 2, outcome.text
    assert "did you mean 'upscale'" in outcome.err
    assert created(emulator) == 0


def test_two_pipeline_files_with_one_name_are_refused(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: nothing produced is lost: a second file with the same `name:` would
    overwrite the first one's outputs and share its seeds."""
    project, emulator = ready
    project.write("clip", CLIP)
    project.write("other", CLIP.replace("a waterfall", "a volcano"))
    assert project.run("clip").code == 0
    outcome = project.run("other")
    assert outcome.code == 2, outcome.text
    assert "pipelines/other.yaml:2:" in outcome.err
    assert "already used by pipelines/clip.yaml" in outcome.err
    assert created(emulator) == 1


# -- hangs -------------------------------------------------------------------------------


class _Stuck:
    """An API that accepts a workflow and answers 'processing' forever, at once."""

    def __init__(self) -> None:
        self.gets = 0
        self.cancels = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path.startswith("/v2/consumer/workflows/"):
            self.gets += 1
        if method in ("PUT", "PATCH"):
            self.cancels += 1
        body = json.dumps({"id": "wf-stuck", "status": "processing", "cost": {"total": 0},
                           "steps": [{"$type": "echo", "name": "ping",
                                      "status": "processing"}]}).encode()
        await send({"type": "http.response.start", "status": 202,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


STUCK = """\
version: 1
name: stuck
steps:
  ping:
    type: echo
    timeout: "00:00:02"
    input:
      message: hello
"""


def test_a_workflow_that_never_finishes_is_canceled_at_its_timeout(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: every wait is bounded. A server that answers 'processing' at once is not
    polled in a tight loop; at the step's timeout the workflow is canceled and fails."""
    import uvicorn

    from civflow.client.civitai import CivitaiClient
    from civflow.runner import RunOptions, execute, prepare

    app = _Stuck()
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="off")
    server = uvicorn.Server(config)
    path = project.write("stuck", STUCK)

    async def main() -> Any:
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        checked = check_pipeline(load_pipeline(path))
        try:
            async with CivitaiClient(f"http://127.0.0.1:{port}", "key-0123456789abcdef") as client:
                with run_lock(checked.spec, project.root):
                    return await execute(prepare(checked), client,
                                         RunOptions(wait_seconds=1, timeout_grace=0))
        finally:
            server.should_exit = True
            await serving

    result = asyncio.run(main())
    assert result.failed == ["ping"]
    assert "timed out" in (result.results["ping"].reason or "")
    assert app.cancels == 1
    assert app.gets <= 5  # backoff, not ~20 requests a second


def test_an_interrupted_runs_finished_entries_reach_the_lockfile(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: nothing produced is lost. A run killed between an instance finishing and
    the lockfile checkpoint left the entry only in its journal: the next plan counts it
    as cached, and the next run writes it to the lockfile without submitting."""
    project, emulator = ready
    project.write("clip", CLIP)
    assert project.run("clip").code == 0
    entry = project.lock("clip")["instances"]["clip"]
    project.lock_path("clip").unlink()
    journal = Journal.create(project.root / ".civflow" / "runs", "clip")
    journal.append({"event": "run-started", "pipeline": "clip"})
    journal.append({"event": "intent", "instance": "clip", "fingerprint": entry["fingerprint"],
                    "externalId": external_id(entry["fingerprint"], 1), "attempt": 1})
    journal.append({"event": "finished", "instance": "clip", "status": "succeeded",
                    "fingerprint": entry["fingerprint"], "workflowId": entry["workflowId"],
                    "cost": entry["cost"], "entry": {**entry, "instance": "clip"}})
    shown = project.cli("plan", "pipelines/clip.yaml")
    assert "1 cached" in shown.out, shown.text
    again = project.run("clip")
    assert again.code == 0 and "1 cached" in again.err, again.text
    assert project.lock("clip")["instances"]["clip"] == entry
    assert created(emulator) == 1


# -- lost or corrupt data, trusted as cached ----------------------------------------------


def test_deleted_or_edited_outputs_come_back_without_paying(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: nothing produced is lost, nothing is paid twice. out/ files are copies:
    editing one leaves the store intact; deleting out/ or editing a file is repaired
    from the store; a store object lost too is downloaded again by blob id. Not once is
    a workflow submitted or a charge reported."""
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    spent, made = charged(emulator), created(emulator)
    lock = project.lock("chain")["instances"]
    hero = lock["hero"]["artifacts"][0]
    out_file = project.lock_path("chain").parent / hero["path"]
    stored = project.root / ".civflow" / "objects" / "sha256" / hero["sha256"][:2] / \
        hero["sha256"][2:]
    assert out_file.stat().st_ino != stored.stat().st_ino  # a copy, not a hard link
    out_file.write_bytes(b"edited by hand")
    assert stored.read_bytes() != b"edited by hand"
    shown = project.cli("plan", "pipelines/chain.yaml")
    assert "restored from the store" in shown.out and "4 cached" in shown.out, shown.text
    again = project.run("chain")
    assert again.code == 0 and "4 cached" in again.err and "spent 0 Buzz" in again.err
    assert hashlib.sha256(out_file.read_bytes()).hexdigest() == hero["sha256"]

    shutil.rmtree(project.root / "out")
    stored.chmod(0o644)
    stored.unlink()  # the store copy is gone too: only the blob id can bring it back
    third = project.run("chain")
    assert third.code == 0 and "spent 0 Buzz" in third.err, third.text
    assert hashlib.sha256(out_file.read_bytes()).hexdigest() == hero["sha256"]
    assert all((project.lock_path("chain").parent / a["path"]).is_file()
               for entry in lock.values() for a in entry["artifacts"])
    assert (charged(emulator), created(emulator)) == (spent, made)


def test_an_out_folder_that_cannot_be_written_fails_before_paying(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: problems with the output folder are found before anything is paid."""
    project, emulator = ready
    project.write("clip", CLIP)
    outcome = project.run("clip", "--out", "/proc/civflow-out")
    assert outcome.code == 1 and "outputs cannot be written there" in outcome.err, outcome.text
    assert created(emulator) == 0
