"""`civflow checkout`: out/ made to match the lockfile from the store (and the remote),
restored by the same function `civflow pull` restores with."""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.loading import load_pipeline
from civflow.remote.checkout import checkout
from tests.remote.support import clone, make_project, run_cli, sha256_of


def test_checkout_restores_what_out_lost_and_removes_only_what_the_store_keeps(
        tmp_path: Path) -> None:
    artifacts = make_project(tmp_path, count=3)
    out = tmp_path / "out" / "p"
    lost = tmp_path / "pipelines" / artifacts[0].path
    lost.unlink()
    edited = tmp_path / "pipelines" / artifacts[1].path
    edited.write_bytes(b"scribbled over")
    stale = out / "old" / "0.png"  # bytes the store has, no longer named by the lockfile
    stale.parent.mkdir()
    stale.write_bytes((tmp_path / "pipelines" / artifacts[2].path).read_bytes())
    mine = out / "notes.txt"  # a person's file: not in the store, never deleted
    mine.write_text("keep me", encoding="utf-8")

    done = checkout(load_pipeline(tmp_path / "pipelines" / "p.yaml"))

    assert sorted(p.resolve() for p in done.out.restored) == sorted(
        p.resolve() for p in (lost, edited))
    assert done.out.unchanged == 1 and done.out.missing == []
    assert done.removed == [stale] and not stale.parent.exists()
    assert mine.read_text(encoding="utf-8") == "keep me"
    for artifact in artifacts:
        assert sha256_of(tmp_path / "pipelines" / artifact.path) == artifact.sha256
    assert done.pulled == 0 and done.remote_problem is None


def test_pull_and_checkout_say_the_same_about_what_nobody_has(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One restore of out/: both commands name the same missing files, in the same words."""
    share = tmp_path / "share"
    (share / "sha256").mkdir(parents=True)
    a, b = tmp_path / "a", tmp_path / "b"
    make_project(a, count=2, url=share.as_uri())
    clone(a, b)
    monkeypatch.chdir(b)

    pull_code, _, pull_err = run_cli(capsys, "pull")
    checkout_code, out, checkout_err = run_cli(capsys, "checkout")

    assert pull_code == checkout_code == 1
    assert "0 restored, 0 unchanged, 0 removed" in out

    def lines(err: str) -> list[str]:
        return [line for line in err.splitlines() if "not restored:" in line]

    assert lines(checkout_err) == lines(pull_err) == [
        f"  not restored: shot[{i}]: ../out/p/shot[{i}]/0.png is neither in the local "
        "store nor on the remote (civflow run downloads it again by blob id, without paying)"
        for i in range(2)]
