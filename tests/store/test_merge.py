"""Three-way lockfile merges never drop a paid result; repair keeps the newest."""

from __future__ import annotations

from civflow.store.lockfile import LockedInstance, Lockfile
from civflow.store.merge import MAX_ALTERNATES, merge, repair
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
