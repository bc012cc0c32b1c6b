"""BlobBook against a small hostile server (in-process): names from answers never form paths,
outputs land in safe instance folders as independent copies, lost artifacts come back by
blob id without a new workflow, and bytes that do not match the lockfile are not adopted.

Guards trust issue cases 1 (re-download by blob id, hash checked), 2 (a `../` blob id
wrote and deleted a file outside the project) and 3 (instance folders stay inside out/).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from civflow.client.civitai import CivitaiClient
from civflow.errors import ApiProtocolError
from civflow.names import safe_dirname
from civflow.runner.blobs import BlobBook
from civflow.store.integrity import ArtifactState, StatCache, check_artifacts
from civflow.store.lockfile import Artifact
from civflow.store.objects import ObjectStore
from tests.client.test_civitai_retry import FakeWorld, in_process

T = TypeVar("T")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
SHA = hashlib.sha256(PNG).hexdigest()
BLOBS = "/v2/consumer/blobs"
WORKFLOWS = "/v2/consumer/workflows"


@pytest.fixture
def world() -> FakeWorld:
    """The scripted API, reached in-process: these are answers, not connections."""
    return in_process()


def _book(world: FakeWorld, project: Path, use: Callable[[BlobBook], Awaitable[T]]) -> T:
    async def main() -> T:
        client = CivitaiClient(world.url, "sk-test-blobs-0123456789", max_attempts=1,
                               transport=world.transport)
        async with client:
            store = ObjectStore(project / ".civflow" / "objects")
            return await use(BlobBook(client, store))
    return asyncio.run(main())


def _image(world: FakeWorld, blob_id: str) -> dict[str, Any]:
    return {"id": blob_id, "available": True, "url": f"{world.url}/content/tok",
            "width": 8, "height": 8}


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "proj"
    (project / ".civflow").mkdir(parents=True)
    return project


def test_a_blob_id_with_dot_dot_writes_and_deletes_nothing_outside(
        world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    canary = tmp_path / "victim.part"  # where objects/tmp/../../../../victim.part points
    canary.write_bytes(b"precious")
    world.script("GET /content/tok", ("bytes", 200, PNG, "image/png"))
    output = {"images": [_image(world, "../../../../victim")]}
    with pytest.raises(ApiProtocolError, match="blob id civflow will not use"):
        _book(world, project, lambda book: book.download_all(
            output, project / "out" / "p" / "hero", project))
    assert canary.read_bytes() == b"precious"
    assert world.hits("GET /content/tok") == 0  # refused before a byte was fetched
    assert not (project / "out").exists()


def test_hostile_instance_names_stay_inside_out(world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    world.script("GET /content/tok", ("bytes", 200, PNG, "image/png"))
    out = project / "out" / "p"
    names = ["sweep[x=../../../escaped]", "../../escaped", "x\x00y", "y" * 300, "CON"]
    for name in names:
        artifacts = _book(world, project, lambda book, name=name: book.download_all(
            {"images": [_image(world, "ABC.png")]}, out_dir=out, instance=name,
            lock_dir=project))
        folder = out / safe_dirname(name)
        assert (folder / "0.png").read_bytes() == PNG
        assert artifacts[0].path == f"out/p/{safe_dirname(name)}/0.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]
    assert sorted(p.name for p in project.iterdir()) == [".civflow", "out"]
    assert len(list(out.iterdir())) == len(names)


def test_outputs_are_copies_and_the_extension_never_comes_from_a_path(
        world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    world.script("GET /content/tok", ("bytes", 200, PNG, "image/../../x"))
    (artifact,) = _book(world, project, lambda book: book.download_all(
        {"blob": _image(world, "NOEXTENSION")}, out_dir=project / "out" / "p",
        instance="hero", lock_dir=project))
    assert artifact.path == "out/p/hero/0.bin"
    out_file = project / artifact.path
    out_file.write_bytes(b"edited by hand")
    store = ObjectStore(project / ".civflow" / "objects")
    assert store.verify(SHA)  # the edit did not reach the stored object
    (status,) = check_artifacts([artifact], project, store, StatCache.for_store(store))
    assert status.state is ArtifactState.OUT_MISSING_OR_MODIFIED


def test_the_old_positional_call_still_works(world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    world.script("GET /content/tok", ("bytes", 200, PNG, "image/png"))
    (artifact,) = _book(world, project, lambda book: book.download_all(
        {"images": [_image(world, "ABC.png")]}, project / "out" / "p" / "hero", project))
    assert artifact.path == "out/p/hero/0.png" and artifact.sha256 == SHA


def _lost(project: Path) -> Artifact:
    """An artifact the lockfile records but neither out/ nor the store still has."""
    return Artifact(blob_id="ABC.png", sha256=SHA, size=len(PNG), media_type="image/png",
                    width=8, height=8, path="out/p/hero/0.png")


def test_a_lost_artifact_is_downloaded_again_by_blob_id_without_a_workflow(
        world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    world.script(f"POST {BLOBS}/ABC.png/refresh",
                 ("json", 200, _image(world, "ABC.png"), {}))
    world.script("GET /content/tok", ("bytes", 200, PNG, "image/png"))
    artifact = _lost(project)
    store = ObjectStore(project / ".civflow" / "objects")
    statuses = check_artifacts([artifact], project, store, StatCache.for_store(store))
    assert statuses[0].needs_download
    (fixed,) = _book(world, project, lambda book: book.repair(
        statuses, lock_dir=project, out_dir=project / "out"))
    assert fixed.ok
    assert (project / artifact.path).read_bytes() == PNG and store.verify(SHA)
    assert world.hits(f"POST {BLOBS}/ABC.png/refresh") == 1
    assert not any(seen.path.startswith(WORKFLOWS) for seen in world.seen)
    assert list((store.root / "tmp").iterdir()) == []


def test_a_re_download_with_other_bytes_is_reported_not_adopted(
        world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    world.script(f"POST {BLOBS}/ABC.png/refresh",
                 ("json", 200, _image(world, "ABC.png"), {}))
    world.script("GET /content/tok", ("bytes", 200, b"something else", "image/png"))
    store = ObjectStore(project / ".civflow" / "objects")
    status = _book(world, project, lambda book: book.redownload(
        _lost(project), lock_dir=project, out_dir=project / "out"))
    assert status.state is ArtifactState.STORE_MISSING_OR_CORRUPT
    other = hashlib.sha256(b"something else").hexdigest()
    assert status.detail == (f"blob ABC.png now has sha256 {other}, not the recorded "
                             f"{SHA}; not adopted")
    assert not store.has(other) and not store.has(SHA)
    assert not (project / "out").exists()
    assert list((store.root / "tmp").iterdir()) == []


def test_a_blob_civitai_forgot_means_running_again(world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    world.script(f"POST {BLOBS}/ABC.png/refresh", ("json", 404, {"status": 404}, {}))
    store = ObjectStore(project / ".civflow" / "objects")
    statuses = check_artifacts([_lost(project)], project, store, StatCache.for_store(store))
    (status,) = _book(world, project, lambda book: book.repair(
        statuses, lock_dir=project, out_dir=project / "out"))
    assert status.needs_download and "the instance must run again" in status.detail


def test_a_hostile_blob_id_in_a_lockfile_is_never_requested(
        world: FakeWorld, tmp_path: Path) -> None:
    project = _project(tmp_path)
    hostile = Artifact(**{**_lost(project).__dict__, "blob_id": "../../workflows"})
    store = ObjectStore(project / ".civflow" / "objects")
    statuses = check_artifacts([hostile], project, store, StatCache.for_store(store))
    (status,) = _book(world, project, lambda book: book.repair(
        statuses, lock_dir=project, out_dir=project / "out"))
    assert status.needs_download and "cannot be fetched again" in status.detail
    assert world.seen == []
