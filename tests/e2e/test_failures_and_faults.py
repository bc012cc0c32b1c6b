"""Failed steps, expired and deleted blobs, and a flaky network, end to end."""

from __future__ import annotations

import pytest

from civflow.emulator import RunningEmulator
from tests.e2e.support import CHAIN, MODEL, Project, check_artifacts, created, requests_to

# `bad` gets bytes that are no image: its job fails on the worker, deterministically.
BRANCHES = f"""\
version: 1
name: branches
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
steps:
  bad:
    type: imageUpscaler
    input:
      image: "data:image/png;base64,bm90IGFuIGltYWdl"
  after_bad:
    type: echo
    input:
      message: "{{{{ steps.bad.output.blob.url }}}}"
  good:
    type: imageGen
    input:
      prompt: a quiet harbour
      width: 256
      height: 256
      steps: 10
  after_good:
    type: imageUpscaler
    input:
      image: "{{{{ steps.good.output.images[0].url }}}}"
"""

ECHOES = """\
version: 1
name: echoes
steps:
  first:
    type: echo
    input:
      message: first
  second:
    type: echo
    input:
      message: second
  third:
    type: echo
    input:
      message: third
"""

REFRESH = "POST /v2/consumer/blobs/{blob_id}/refresh"
UPLOAD = "POST /v2/consumer/blobs"


def test_a_failed_branch_skips_its_dependents_and_the_other_branch_finishes(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("branches", BRANCHES)
    outcome = project.run("branches")
    assert outcome.code == 7, outcome.text
    assert "bad" in outcome.err and "--retry-failed" in outcome.err
    assert "Traceback" not in outcome.text
    lock = check_artifacts(project, "branches")
    assert sorted(lock["instances"]) == ["after_good", "good"]
    # bad, good, after_good made once each; after_bad rides fused in bad's workflow
    # (the API never starts a step whose source failed) and is recorded nowhere.
    made = emulator.counters()["step_creations"]
    assert all(made.get(n) == 1 for n in ("bad", "good", "after_good")), made
    status = project.cli("status", "pipelines/branches.yaml").out
    rows = {line.split()[0]: line.split()[1] for line in status.splitlines()[1:]}
    assert rows["bad"] == "failed" and rows["good"] == "succeeded", status

    # A plain re-run sends nothing: the plan decides `bad` failed last time.
    before = created(emulator)
    again = project.run("branches")
    assert again.code == 7 and created(emulator) == before, again.text
    assert "x bad" in again.err and "not sent again without --retry-failed" in again.err
    retried = project.run("branches", "--retry-failed")
    assert retried.code == 7, retried.text
    counters = emulator.counters()
    assert all(n == 1 for n in counters["creations_by_external_id"].values())
    assert counters["step_creations"]["bad"] == 2  # a second attempt, under a new key
    assert counters["step_creations"]["good"] == 1


def test_retry_failed_resubmits_under_a_new_external_id(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("echoes", ECHOES)
    emulator.set_faults(step_failure_rate=1)
    assert project.run("echoes").code == 7
    emulator.set_faults(step_failure_rate=0)
    first_keys = set(emulator.counters()["creations_by_external_id"])
    assert len(first_keys) == 3
    outcome = project.run("echoes", "--retry-failed")
    assert outcome.code == 0, outcome.text
    keys = emulator.counters()["creations_by_external_id"]
    new = set(keys) - first_keys
    assert len(new) == 3 and all(k.endswith("-2") for k in new)
    assert project.lock("echoes")["instances"]["second"]["output"]["message"] == "second"


def test_fail_fast_starts_no_new_work(ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("echoes", ECHOES)
    emulator.set_faults(step_failure_rate=1)
    outcome = project.run("echoes", "--fail-fast", "--concurrency", "1")
    assert outcome.code == 7, outcome.text
    assert created(emulator) == 1
    assert "1 failed, 2 not-run" in outcome.err, outcome.err
    assert "third: skipped (the run stopped before this instance)" in outcome.err
    emulator.set_faults(step_failure_rate=0)
    # Without --fail-fast every independent step is tried.
    project.write("echoes", ECHOES.replace("message: ", "message: again "))
    emulator.set_faults(step_failure_rate=1)
    assert project.run("echoes", "--concurrency", "1").code == 7
    assert created(emulator) == 4


def test_expired_urls_of_a_cached_upstream_are_refreshed(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    emulator.expire_urls()
    refreshes = requests_to(emulator, REFRESH, ok_only=True)
    uploads = requests_to(emulator, UPLOAD)
    outcome = project.run("chain", "--var", "motion=tilt up", "--update-lockfile")  # clip alone
    assert outcome.code == 0, outcome.text
    assert created(emulator) == 5
    assert requests_to(emulator, REFRESH, ok_only=True) > refreshes
    assert requests_to(emulator, UPLOAD) == uploads
    check_artifacts(project, "chain")


def test_deleted_upstream_blobs_are_uploaded_again_from_the_local_copy(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    assert project.run("chain").code == 0
    for entry in project.lock("chain")["instances"].values():
        for artifact in entry["artifacts"]:
            emulator.forget_blob(artifact["blobId"])
    outcome = project.run("chain", "--var", "motion=tilt up", "--update-lockfile")
    assert outcome.code == 0, outcome.text
    assert requests_to(emulator, UPLOAD, ok_only=True) == 1  # upscale[0], the clip's input
    clip = project.lock("chain")["instances"]["clip"]
    assert clip["artifacts"][0]["mediaType"] == "video/mp4"
    check_artifacts(project, "chain")


def test_a_flaky_network_still_creates_each_workflow_once(
        ready: tuple[Project, RunningEmulator], monkeypatch: pytest.MonkeyPatch) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    # What is tested is what gets created, not how long the client waits between tries:
    # pauses of at most 10 ms (full back-off and Retry-After took 100 s of sleep here).
    monkeypatch.setenv("CIVFLOW_BACKOFF_CAP", "0.01")
    emulator.set_faults(rate_limit=0.3, error_rate=0.3, drop_rate=0.3)
    codes = []
    for _ in range(10):
        outcome = project.run("chain")
        assert "Traceback" not in outcome.text
        codes.append(outcome.code)
        if outcome.code == 0:
            break
    # Between attempts the only failures are "still failing after retries" (5 or 6).
    assert codes[-1] == 0 and set(codes[:-1]) <= {5, 6}, codes
    requests = emulator.counters()["requests"]
    assert sum(n for by in requests.values() for s, n in by.items() if s in ("429", "503",
                                                                         "dropped")) > 0
    emulator.set_faults(rate_limit=0, error_rate=0, drop_rate=0)
    check_artifacts(project, "chain")
    keys = emulator.counters()["creations_by_external_id"]
    assert all(n == 1 for n in keys.values()), keys
    made = emulator.counters()["step_creations"]
    assert len(made) == 4 and all(n == 1 for n in made.values()), made
    assert created(emulator) == 4
