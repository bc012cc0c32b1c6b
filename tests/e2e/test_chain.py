"""The hero → upscale → video chain and a matrix sweep, over real HTTP against the emulator."""

from __future__ import annotations

from civflow.emulator import RunningEmulator
from civflow.store.lockfile import Lockfile
from tests.e2e.support import CHAIN, WORKFLOWS, Project, check_artifacts, created, requests_to

MATRIX = """\
version: 1
name: sweep
steps:
  say:
    type: echo
    matrix:
      a: [1, 2]
      b: [x, y]
    input:
      message: "a={{ matrix.a }} b={{ matrix.b }}"
  total:
    type: echo
    input:
      message: "{{ steps.say.outputs[0].message }} | {{ steps.say.outputs[3].message }}"
"""


def test_chain_produces_images_upscales_video_and_a_clean_lockfile(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("chain", CHAIN)
    outcome = project.run("chain")
    assert outcome.code == 0, outcome.text
    assert "4 succeeded" in outcome.err
    out = project.root / "out" / "chain"
    up0, up1 = _upscales(project)
    for name, suffix in [("hero/0", "jpeg"), ("hero/1", "jpeg"), (f"{up0}/0", "jpeg"),
                         (f"{up1}/0", "jpeg"), ("clip/0", "mp4")]:
        path = out / f"{name}.{suffix}"
        assert path.is_file() and path.stat().st_size > 0, path
    assert (out / "clip" / "0.mp4").read_bytes()[4:8] == b"ftyp"
    assert (out / "hero" / "0.jpeg").read_bytes()[:2] == b"\xff\xd8"

    text = project.lock_path("chain").read_text(encoding="utf-8")
    assert "http" not in text and "sig=" not in text
    assert text.endswith("}\n") and text == Lockfile.from_json(text, "chain").to_json()
    # braces, pipeline, schema, a blank after "instances"; a line and a blank per instance
    assert len(text.splitlines()) == 6 + 1 + 4 * 2
    lock = check_artifacts(project, "chain")
    assert lock["schema"] == 2
    instances = lock["instances"]
    assert sorted(instances) == sorted(["clip", "hero", up0, up1])
    media = {name: [a["mediaType"] for a in e["artifacts"]] for name, e in instances.items()}
    assert media == {"hero": ["image/jpeg"] * 2, up0: ["image/jpeg"],
                     up1: ["image/jpeg"], "clip": ["video/mp4"]}
    fingerprints = [e["fingerprint"] for e in instances.values()]
    assert all(f.startswith("sha256:") and len(f) == 71 for f in fingerprints)
    assert len(set(fingerprints)) == 4
    # Each upscale doubles its source: hero is 256², upscales 512².
    assert {a["width"] for a in instances[up0]["artifacts"]} == {512}
    # Upstream blobs appear in the request as content hashes, not URLs.
    hero_shas = {a["sha256"] for a in instances["hero"]["artifacts"]}
    upscale_image = instances[up0]["request"]["input"]["image"]
    assert upscale_image.rsplit(":", 1)[1] in hero_shas
    assert created(emulator) == 4
    assert all(n == 1 for n in emulator.counters()["creations_by_external_id"].values())

    journal = [r for r in project.journal_records()]
    assert [r["instance"] for r in journal if r.get("event") == "intent"].count("hero") == 1
    assert {r["workflowId"] for r in journal if r.get("event") == "submitted"} == \
        {e["workflowId"] for e in instances.values()}

    posts = requests_to(emulator, WORKFLOWS)
    again = project.run("chain")
    assert again.code == 0, again.text
    assert "4 cached" in again.err
    assert requests_to(emulator, WORKFLOWS) == posts and created(emulator) == 4
    assert project.lock_path("chain").read_text(encoding="utf-8") == text


def test_matrix_sweep_runs_every_combination_once_in_one_batch(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("sweep", MATRIX)
    outcome = project.run("sweep")
    assert outcome.code == 0, outcome.text
    lock = project.lock("sweep")
    names = ["say[a=1,b=x]", "say[a=1,b=y]", "say[a=2,b=x]", "say[a=2,b=y]"]
    assert sorted(lock["instances"]) == sorted([*names, "total"])
    assert created(emulator) == 5
    ids = {lock["instances"][n]["workflowId"] for n in names}
    assert len(ids) == 1  # batched by default: one workflow for the four
    assert lock["instances"]["say[a=2,b=x]"]["output"]["message"] == "a=2 b=x"
    # Outputs come back in instance order (the order the matrix was written).
    assert lock["instances"]["total"]["output"]["message"] == \
        "a=1 b=x | a=2 b=y"


def _upscales(project: Project) -> tuple[str, str]:
    """The two upscale instances in hero's image order (named by content, not position)."""
    lock = project.lock("chain")["instances"]
    images = [a["sha256"] for a in lock["hero"]["artifacts"]]
    ups = sorted((n for n in lock if n.startswith("upscale[")),
                 key=lambda n: images.index(lock[n]["request"]["input"]["image"].rsplit(":")[-1]))
    first, second = ups
    return first, second
