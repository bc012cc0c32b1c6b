"""What plain `git merge` does with two branches' lockfiles, case by case.

Not a speed measurement: the outcome table behind the lockfile's layout (see
civflow.store.lockfile and docs/guide/runs.md). Each case builds a 6-instance lockfile
on main, changes it one way on branch A and another on branch B, merges with the git on
this machine (no civflow setup, no merge driver) and prints whether the merge was clean
and kept every change.

    python bench/lockfile_merges.py
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from civflow.store.lockfile import LockedInstance, Lockfile

BASE = {f"shot[{i}]": f"f{i}" for i in range(6)}


def _lock(fingerprints: Mapping[str, str]) -> Lockfile:
    return Lockfile("p", {n: LockedInstance(n, "shot", "imageGen", fp, {"input": {"p": fp}}, 1,
                                            "0-1", 1.0, "2026", {}, ())
                          for n, fp in fingerprints.items()})


def case(a: Mapping[str, str], b: Mapping[str, str]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def git(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["git", "-c", "user.name=b", "-c", "user.email=b@example.invalid",
                                   "-c", "commit.gpgsign=false", *args], cwd=root,
                                  capture_output=True, text=True, check=False)
        path = root / "p.lock.json"
        git("init", "-q", "-b", "main")
        _lock(BASE).save(path)
        git("add", "-A")
        git("commit", "-qm", "base")
        for branch, side in (("A", a), ("B", b)):
            git("checkout", "-q", "-b", branch, "main")
            _lock(side).save(path)
            git("commit", "-qam", branch)
        if git("merge", "-q", "A", "-m", "merge").returncode:
            return "conflict (lock repair keeps both sides)"
        want = dict(BASE)
        for side in (a, b):
            want.update({k: v for k, v in side.items() if BASE.get(k) != v})
            for gone in set(BASE) - set(side):
                want.pop(gone, None)
        merged = Lockfile.load(path)
        got = {n: e.fingerprint for n, e in merged.instances.items()} if merged else {}
        return "clean, every change kept" if got == want else "clean but WRONG"


def main() -> None:
    def m(**changed: str) -> dict[str, str]:
        return {**BASE, **{k.replace("_", "[") + "]": v for k, v in changed.items()}}
    cases = {
        "re-ran neighbouring instances": (m(shot_2="A"), m(shot_3="B")),
        "re-ran the first and the second": (m(shot_0="A"), m(shot_1="B")),
        "re-ran the last two": (m(shot_4="A"), m(shot_5="B")),
        "re-ran every other instance": (m(shot_0="A", shot_2="A", shot_4="A"),
                                        m(shot_1="B", shot_3="B", shot_5="B")),
        "added instances at different places": ({**BASE, "a": "A"}, {**BASE, "z": "B"}),
        "re-ran the same instance": (m(shot_2="A"), m(shot_2="B")),
        "one added at the end, the other re-ran the last": ({**BASE, "z": "A"}, m(shot_5="B")),
        "both added at the end": ({**BASE, "y": "A"}, {**BASE, "z": "B"}),
        "one removed, the other re-ran its neighbour": (
            {k: v for k, v in BASE.items() if k != "shot[2]"}, m(shot_3="B")),
    }
    for label, (a, b) in cases.items():
        print(f"{label:50s} {case(a, b)}")


if __name__ == "__main__":
    main()
