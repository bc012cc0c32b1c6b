"""Three-way lockfile merges never drop a paid result; repair keeps the newest."""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.store.lockfile import LockedInstance, Lockfile
from civflow.store.merge import MAX_ALTERNATES, merge, repair, salvage
from tests.store.test_lockfile import _entry


def _at(name: str, fp: str, when: str) -> LockedInstance:
    return _entry(name, fingerprint=fp, completed_at=when)


def test_each_side_keeps_what_it_changed() -> None:
    base = Lockfile("p", {"a": _at("a", "a0", "1"), "b": _at("b", "b0", "1")})
    ours = Lockfile("p", {"a": _at("a", "a1", "2"), "b": _at("b", "b0", "1")})
    theirs = Lockfile("p", {"a": _at("a", "a0", "1"), "b": _at("b", "b1", "3")})
    merged = merge(base, ours, theirs)
    assert {n: e.fingerprint for n, e in merged.instances.items()} == {"a": "a1", "b": "b1"}
    assert set(merged.alternates) == {"a0", "b0"}  # the base results are paid for too


def test_when_both_changed_one_instance_the_newer_is_current_the_other_kept() -> None:
    base = Lockfile("p", {"a": _at("a", "a0", "1")})
    merged = merge(base, Lockfile("p", {"a": _at("a", "mine", "5")}),
                   Lockfile("p", {"a": _at("a", "theirs", "7")}))
    assert merged.instances["a"].fingerprint == "theirs"
    assert {"mine", "a0"} <= set(merged.alternates)


def test_a_removal_keeps_the_result_findable_and_a_change_beats_a_removal() -> None:
    base = Lockfile("p", {"a": _at("a", "a0", "1"), "b": _at("b", "b0", "1")})
    ours = Lockfile("p", {"b": _at("b", "b0", "1")})  # removed a
    theirs = Lockfile("p", {"a": _at("a", "a0", "1")})  # removed b ...
    merged = merge(base, ours, theirs)
    assert merged.instances == {}
    assert set(merged.alternates) == {"a0", "b0"}
    changed = Lockfile("p", {"a": _at("a", "a2", "4"), "b": _at("b", "b0", "1")})
    assert merge(base, ours, changed).instances["a"].fingerprint == "a2"


def test_repair_takes_the_newest_and_the_file_keeps_the_newest_earlier_ones() -> None:
    runs = [_at("a", f"v{i}", str(i)) for i in range(6)]
    rebuilt = repair("p", None, runs)
    assert rebuilt.instances["a"].fingerprint == "v5"
    assert set(rebuilt.alternates) == {f"v{i}" for i in range(5)}  # nothing dropped here
    written = Lockfile.from_json(rebuilt.to_json(), "x")
    assert set(written.alternates) == {f"v{i}" for i in range(5 - MAX_ALTERNATES, 5)}


def test_salvage_keeps_instances_that_share_a_fingerprint_and_reads_deep_lines_as_damage(
) -> None:
    """Two instances with the same inputs share a fingerprint: both are read (a repair
    must not count them as one lost result); a line nested past MAX_DEPTH is damage,
    listed, never a RecursionError."""
    same = [_at(n, "shared", "2026") for n in ("a", "b")]
    found = salvage(Lockfile("p", {e.instance: e for e in same}).to_json())
    assert found.lockfile("p").instances.keys() == {"a", "b"}
    assert found.fingerprints == {"shared"} and not found.broken
    deep = '{\n  "instances": {\n    "a": ' + '{"x": ' * 3000 + "1" + "}" * 3000 + "\n  }\n}\n"
    broken = salvage(deep)
    assert broken.broken == [3] and broken.lockfile("p").instances == {}


def test_lock_repair_accepts_a_healthy_file_whose_instances_share_inputs(
        tmp_path: Path) -> None:
    from civflow.cli import main

    path = tmp_path / "p.lock.json"
    path.write_text(Lockfile("p", {n: _at(n, "shared", "2026") for n in ("a", "b")}).to_json(),
                    encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        main(["lock", "repair", str(path)])
    assert done.value.code == 0
    repaired = Lockfile.load(path)
    assert repaired is not None and repaired.instances.keys() == {"a", "b"}
