"""A paid result whose files are gone is restored from wherever its bytes are, into the
current out/, or else planned as work: priced, held to --max-cost, never paid silently
and never dropped. Batched and one per instance alike (one rule decides both).

The emulator is served from this test process; its counters show what was submitted
and charged before and after.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from civflow.emulator import RunningEmulator
from tests.e2e.support import (
    MODEL,
    WORKFLOWS,
    Project,
    check_artifacts,
    created,
    requests_to,
)

SWEEP = f"""\
version: 1
name: sweep
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
    width: 256
    height: 256
    steps: 10
steps:
  shot:
    type: imageGen
    matrix:
      seed: [1, 2]
    input:
      prompt: "a teapot, take {{{{ matrix.seed }}}}"
      seed: "{{{{ matrix.seed }}}}"
  up:
    type: imageUpscaler
    input:
      image: "{{{{ steps.shot.outputs[0].images[0].url }}}}"
"""

BATCHING = pytest.mark.parametrize("batching", [(), ("--batch", "5")],
                                   ids=["one-per-instance", "batched"])


def _charged(emulator: RunningEmulator) -> float:
    return float(emulator.counters()["buzz_charged"])


def _shot_files(project: Project, out: str) -> list[Path]:
    return sorted(p for p in (project.root / out / "sweep").rglob("*")
                  if p.is_file() and p.parent.name.startswith("shot"))


@BATCHING
def test_files_gone_from_an_earlier_out_come_back_from_the_store(
        ready: tuple[Project, RunningEmulator], batching: tuple[str, ...]) -> None:
    project, emulator = ready
    project.write("sweep", SWEEP)
    first = project.run("sweep", "--out", "alt", *batching)
    assert first.code == 0, first.text
    gone = _shot_files(project, "alt")
    assert len(gone) == 2
    for folder in {p.parent for p in gone}:
        shutil.rmtree(folder)
    made, charged = created(emulator), _charged(emulator)

    plan = project.cli("plan", "pipelines/sweep.yaml", *batching)
    assert plan.code == 0, plan.text
    assert "0 to run" in plan.out, plan.out

    again = project.run("sweep", "--max-cost", "0", *batching)  # into out/, not alt/
    assert again.code == 0, again.text
    assert created(emulator) == made and _charged(emulator) == charged
    assert len(_shot_files(project, "out")) == 2
    lock = check_artifacts(project, "sweep")
    for entry in lock["instances"].values():
        for artifact in entry["artifacts"]:
            assert artifact["path"].startswith("../out/sweep/"), artifact["path"]


@BATCHING
def test_files_gone_everywhere_are_planned_as_work_and_held_to_the_cap(
        ready: tuple[Project, RunningEmulator], batching: tuple[str, ...]) -> None:
    project, emulator = ready
    project.write("sweep", SWEEP)
    assert project.run("sweep", *batching).code == 0
    lock = project.lock("sweep")
    shots = {n: e for n, e in lock["instances"].items() if n.startswith("shot")}
    for entry in shots.values():
        for artifact in entry["artifacts"]:
            emulator.forget_blob(artifact["blobId"])
            (project.lock_path("sweep").parent / artifact["path"]).unlink()
    shutil.rmtree(project.root / ".civflow" / "objects")
    made, charged = created(emulator), _charged(emulator)
    posts = requests_to(emulator, WORKFLOWS)

    refused = project.run("sweep", "--max-cost", "0", *batching)
    assert refused.code == 8, refused.text
    assert "over --max-cost 0" in refused.err, refused.err
    # Refused before any POST, not even a whatif; nothing created or charged.
    assert requests_to(emulator, WORKFLOWS) == posts
    assert created(emulator) == made and _charged(emulator) == charged

    paid = project.run("sweep", *batching)
    assert paid.code == 0, paid.text
    assert "lost" in paid.err, paid.err
    # Both shots are made again; the upscale follows its changed input.
    assert created(emulator) > made
    relock = check_artifacts(project, "sweep")
    assert set(relock["instances"]) == set(lock["instances"])
    for name in shots:
        assert relock["instances"][name]["workflowId"] != shots[name]["workflowId"]


def test_a_hand_edited_path_never_writes_outside_out(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("sweep", SWEEP)
    assert project.run("sweep").code == 0
    path = project.lock_path("sweep")
    text = path.read_text(encoding="utf-8")
    lock = json.loads(text)
    victim = lock["instances"]["shot[seed=1]"]["artifacts"][0]["path"]
    (path.parent / victim).unlink()
    path.write_text(text.replace(json.dumps(victim), json.dumps("../../x.png")),
                    encoding="utf-8")
    made = created(emulator)
    again = project.run("sweep", "--max-cost", "0")
    assert again.code == 0, again.text
    assert created(emulator) == made
    assert not (project.root.parent / "x.png").exists()
    entry = project.lock("sweep")["instances"]["shot[seed=1]"]
    assert entry["artifacts"][0]["path"].startswith("../out/sweep/")
    check_artifacts(project, "sweep")


def test_a_killed_re_make_of_lost_work_is_resumed_not_paid_again(
        project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 while a lost instance is being made again: the next run re-attaches to
    that workflow by its key instead of paying under a new one."""
    import signal
    import time

    from civflow.emulator import EmulatorConfig, start_emulator
    from tests.e2e.support import SECRET, aim, spawn

    with start_emulator(EmulatorConfig(announce=False, time_scale=0, api_key=SECRET)) as served:
        aim(monkeypatch, served)
        project.write("sweep", SWEEP)
        assert project.run("sweep").code == 0
        lock = project.lock("sweep")
        for name, entry in lock["instances"].items():
            if name.startswith("shot"):
                for artifact in entry["artifacts"]:
                    served.forget_blob(artifact["blobId"])
                    (project.lock_path("sweep").parent / artifact["path"]).unlink()
        shutil.rmtree(project.root / ".civflow" / "objects")
        made = created(served)
        served.set_faults(time_scale=5)  # the re-made shots are still running when killed
        process = spawn(project, served, "sweep", log="lost")
        end = time.monotonic() + 30
        while time.monotonic() < end and created(served) < made + 2:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert created(served) == made + 2, (project.root / "lost.err").read_text()
        served.set_faults(time_scale=0)
        resumed = project.run("sweep")
        assert resumed.code == 0, resumed.text
        # The two shots were re-attached, not created again. Their seeds are fixed, so
        # the same pictures come back and the upscale stays cached.
        assert created(served) == made + 2
        per_key = served.counters()["creations_by_external_id"]
        assert all(n == 1 for n in per_key.values()), per_key
        check_artifacts(project, "sweep")


def test_a_hand_edited_blob_id_is_never_sent_and_counts_as_lost(
        ready: tuple[Project, RunningEmulator]) -> None:
    """A lockfile whose lost file names a blob id civflow would never send (`../x`):
    it is not asked for, and the instance is priced as lost work, held to the cap."""
    project, emulator = ready
    project.write("sweep", SWEEP)
    assert project.run("sweep").code == 0
    path = project.lock_path("sweep")
    lock = json.loads(path.read_text(encoding="utf-8"))
    artifact = lock["instances"]["shot[seed=1]"]["artifacts"][0]
    for name in ("shot[seed=1]", "shot[seed=2]"):  # seed=2's blob is asked of Civitai
        (path.parent / lock["instances"][name]["artifacts"][0]["path"]).unlink()
    shutil.rmtree(project.root / ".civflow" / "objects")
    text = path.read_text(encoding="utf-8").replace(json.dumps(artifact["blobId"]),
                                                    json.dumps("../../etc/passwd"))
    path.write_text(text, encoding="utf-8")
    def asked() -> int:  # blob refreshes, and POSTs no route of the API matches
        return sum(n for route, by in emulator.counters()["requests"].items()
                   if "refresh" in route or "unmatched" in route for n in by.values())

    before = asked()
    made = created(emulator)
    refused = project.run("sweep", "--max-cost", "0")
    assert refused.code == 8 and "over --max-cost 0" in refused.err, refused.text
    assert created(emulator) == made
    assert asked() - before == 1  # shot[seed=2]'s blob only; the edited id is never sent
