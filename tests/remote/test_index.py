"""`index_for`: the remote as plan and run see it: asked only about missing objects,
listed once per plan, and a remote that cannot be used degrades to "not on the remote"
with the reason kept (never a credential)."""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.remote import Remote, RemoteConfig
from civflow.remote.index import index_for
from civflow.store.objects import ObjectStore
from tests.remote.s3server import KEY_SECRET, credentials
from tests.remote.support import make_project, write_config


def test_the_index_names_what_the_remote_holds_and_lives_with_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a plan (one store object) lists the remote once; a new plan sees what
    was pushed since."""
    monkeypatch.delenv("CIVFLOW_REMOTE", raising=False)
    share = tmp_path / "share"
    artifacts = make_project(tmp_path / "a", count=40, size=100, url=share.as_uri())
    shas = [a.sha256 for a in artifacts]
    store = ObjectStore(tmp_path / "a" / ".civflow" / "objects")
    Remote(RemoteConfig(url=share.as_uri())).push_from(store, shas[:30])
    index = index_for(store)
    assert index is not None and index_for(store) is index
    assert index.holding(shas) == set(shas[:30]) and index.error is None
    Remote(RemoteConfig(url=share.as_uri())).push_from(store, shas[30:])
    assert index.holding(shas) == set(shas[:30])  # this plan's snapshot
    fresh = ObjectStore(tmp_path / "a" / ".civflow" / "objects")
    later = index_for(fresh)
    assert later is not None and later.holding(shas) == set(shas)


def test_no_remote_configured_means_no_index(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a project without a remote plans exactly as before (nothing is asked)."""
    monkeypatch.delenv("CIVFLOW_REMOTE", raising=False)
    make_project(tmp_path, count=1)
    assert index_for(ObjectStore(tmp_path / ".civflow" / "objects")) is None
    assert index_for(ObjectStore(tmp_path / "elsewhere")) is None


def test_a_remote_that_refuses_is_an_error_kept_not_raised(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: missing credentials while planning hold nothing and say why, without
    printing a secret; the plan goes on."""
    credentials(monkeypatch, tmp_path, present=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", KEY_SECRET)  # half a pair is no credential
    monkeypatch.delenv("CIVFLOW_REMOTE", raising=False)
    make_project(tmp_path, count=1)
    write_config(tmp_path, "s3://team/civflow",
                 {"endpoint_url": "http://127.0.0.1:9"})
    index = index_for(ObjectStore(tmp_path / ".civflow" / "objects"))
    assert index is not None
    assert index.holding(["a" * 64]) == set()
    assert index.error is not None and "s3://team/civflow" in index.error
    assert KEY_SECRET not in index.error
