"""prior_of and artifact_health: an instance is cached only while its artifacts hash right,
and the planner learns which ones a local restore fixes and which need a download.

Guards trust issue case 1: an edited output used to count as present ("cached").
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from civflow.runner.state import artifact_health, prior_of, stat_cache
from civflow.store.integrity import StatCache
from civflow.store.lockfile import Artifact, LockedInstance
from civflow.store.objects import ObjectStore

IMAGES = [b"first image bytes", b"second image bytes"]


def _entry(tmp_path: Path) -> tuple[LockedInstance, ObjectStore]:
    store = ObjectStore(tmp_path / ".civflow" / "objects")
    artifacts = []
    for n, data in enumerate(IMAGES):
        src = tmp_path / f"src{n}"
        src.write_bytes(data)
        sha = store.import_file(src)
        store.materialize(sha, tmp_path / "out" / "p" / "hero" / f"{n}.png")
        artifacts.append(Artifact(blob_id=f"B{n}.png", sha256=sha, size=len(data),
                                  media_type="image/png", width=None, height=None,
                                  path=f"out/p/hero/{n}.png"))
    entry = LockedInstance(instance="hero", step="hero", type="imageGen", fingerprint="f" * 64,
                           request={}, seed=1, workflow_id="0-1", cost=1.0,
                           completed_at=None, output={}, artifacts=tuple(artifacts))
    return entry, store


def test_intact_artifacts_are_ok(tmp_path: Path) -> None:
    entry, store = _entry(tmp_path)
    assert prior_of(entry, tmp_path, store).artifacts_ok
    health = artifact_health(entry, tmp_path, store)
    assert health.ok and health.restore == () and health.redownload == ()


def test_an_edited_output_is_not_cached_on_faith(tmp_path: Path) -> None:
    entry, store = _entry(tmp_path)
    (tmp_path / "out" / "p" / "hero" / "0.png").write_bytes(b"edited")
    assert not prior_of(entry, tmp_path, store).artifacts_ok
    health = artifact_health(entry, tmp_path, store)
    assert health.restore == (entry.artifacts[0],) and health.redownload == ()


def test_a_corrupt_object_with_its_output_gone_needs_a_download(tmp_path: Path) -> None:
    entry, store = _entry(tmp_path)
    second = entry.artifacts[1]
    path = store.path_for(second.sha256)
    os.chmod(path, 0o644)
    path.write_bytes(b"rot")
    (tmp_path / second.path).unlink()
    prior = prior_of(entry, tmp_path, store)
    assert not prior.artifacts_ok
    health = artifact_health(entry, tmp_path, store)
    assert health.restore == () and health.redownload == (second,)
    assert path.read_bytes() == b"rot"  # checking changes nothing; repair quarantines


def test_without_a_store_artifacts_are_taken_as_recorded(tmp_path: Path) -> None:
    entry, _ = _entry(tmp_path)
    (tmp_path / "out" / "p" / "hero" / "0.png").unlink()
    assert prior_of(entry, tmp_path, None).artifacts_ok


def test_a_shared_cache_is_saved_once_and_reused(tmp_path: Path) -> None:
    entry, store = _entry(tmp_path)
    cache = StatCache.for_store(store)
    assert prior_of(entry, tmp_path, store, cache).artifacts_ok
    cache.save()
    saved = tmp_path / ".civflow" / "statcache.json"
    assert saved.is_file()
    again = stat_cache(store)
    assert len(again) == 4  # two outputs, two objects
    # The cache answers for an unchanged file without hashing it: a wrong entry with
    # the right stat is believed, which is exactly what makes the check cheap.
    out = tmp_path / entry.artifacts[0].path
    again.record(out, hashlib.sha256(b"not these bytes").hexdigest())
    assert not artifact_health(entry, tmp_path, store, again).ok
