"""Plain git merges of lockfiles, in fresh clones with no civflow setup at all (what
GitHub's merge button is): branches that re-ran different instances merge cleanly and
keep every entry; branches that re-ran the same instance conflict on that line only,
and `civflow lock repair` keeps both results. Nothing is paid again: the served API's
counters say so.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from civflow.emulator import EmulatorConfig, RunningEmulator, start_emulator
from civflow.store.lockfile import MAX_EARLIER, LockedInstance, Lockfile
from tests.cli_in_process import run_cli
from tests.e2e.support import MODEL, REPO, SECRET, created

SWEEP = f"""\
version: 1
name: sweep
steps:
  shot:
    type: imageGen
    matrix:
      n: [1, 2, 3, 4]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "a teapot on marble, take {{{{ matrix.n }}}}"
      width: 256
      height: 256
      steps: 10
"""
LOCK = "pipelines/sweep.lock.json"


@pytest.fixture
def api() -> Iterator[RunningEmulator]:
    with start_emulator(EmulatorConfig(announce=False, time_scale=0, api_key=SECRET)) as api:
        yield api


class Team:
    def __init__(self, tmp: Path, api: RunningEmulator) -> None:
        self.tmp, self.api = tmp, api
        self.origin = tmp / "origin.git"
        self.git(tmp, "init", "-q", "--bare", "-b", "main", str(self.origin))
        first = self.clone("first")
        (first / "pipelines").mkdir()
        (first / "pipelines" / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
        (first / ".gitignore").write_text(".civflow/\nout/\n", encoding="utf-8")
        self.civflow(first, "run", "pipelines/sweep.yaml", "--yes")
        self.commit(first, "sweep")
        self.git(first, "push", "-q", "origin", "HEAD:main")

    def git(self, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid",
                               "-c", "commit.gpgsign=false", *args], cwd=cwd, text=True,
                              capture_output=True, timeout=60, check=False)
        assert done.returncode == 0 or not check, done.stdout + done.stderr
        return done

    def clone(self, name: str) -> Path:
        """A fresh clone: no .civflow, no out/, no hooks, no merge driver."""
        folder = self.tmp / name
        if (self.origin / "refs" / "heads" / "main").exists():
            self.git(self.tmp, "clone", "-q", str(self.origin), str(folder))
        else:
            self.git(self.tmp, "init", "-q", "-b", "main", str(folder))
            self.git(folder, "remote", "add", "origin", str(self.origin))
        return folder

    def civflow(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """`civflow ARGS` as a child with only this environment would run it (in-process)."""
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "CIVITAI_BASE_URL": self.api.url,
               "CIVITAI_API_KEY": SECRET, "CIVFLOW_EMULATOR_TIME_SCALE": "0",
               "HOME": str(self.tmp)}
        done = run_cli(*args, cwd=cwd, env=env)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def commit(self, cwd: Path, message: str) -> None:
        self.git(cwd, "add", "-A")
        self.git(cwd, "commit", "-q", "-m", message)

    def branch(self, name: str, *only: str, rerolls: int = 1) -> None:
        """In a fresh clone, re-roll the seeds of `only` and push the lockfile."""
        folder = self.clone(f"clone-{name}")
        self.git(folder, "checkout", "-q", "-b", name)
        for _ in range(rerolls):
            args = [a for glob in only for a in ("--only", glob)]
            done = self.civflow(folder, "run", "pipelines/sweep.yaml", "--yes",
                                "--reroll", "shot", *args)
            assert done.returncode == 0, done.stderr
        self.commit(folder, f"reroll {' '.join(only)}")
        self.git(folder, "push", "-q", "origin", name)


def _fingerprints(folder: Path) -> dict[str, str]:
    lock = Lockfile.load(folder / LOCK)
    assert lock is not None
    return {name: entry.fingerprint for name, entry in lock.instances.items()}


def test_branches_that_re_ran_different_instances_merge_cleanly(
        tmp_path: Path, api: RunningEmulator) -> None:
    team = Team(tmp_path, api)
    before = _fingerprints(tmp_path / "first")
    team.branch("odd", "shot[n=1]", "shot[n=3]")
    team.branch("even", "shot[n=2]", "shot[n=4]")
    paid = created(api)
    assert paid == 4 + 4
    merger = team.clone("merger")
    for name in ("odd", "even"):
        merged = team.git(merger, "merge", "--no-edit", f"origin/{name}")
        assert "CONFLICT" not in merged.stdout + merged.stderr
    after = _fingerprints(merger)
    assert set(after) == set(before)
    assert all(after[n] != before[n] for n in after)  # every side's re-run was kept
    plan = team.civflow(merger, "plan", "pipelines/sweep.yaml", "--format", "json")
    assert plan.returncode == 0 and json.loads(plan.stdout)["counts"] == {"cached": 4}, plan
    run = team.civflow(merger, "run", "pipelines/sweep.yaml", "--yes")
    assert run.returncode == 0, run.stderr
    assert created(api) == paid  # nothing paid again


def test_the_same_instance_on_both_branches_is_repaired_keeping_both(
        tmp_path: Path, api: RunningEmulator) -> None:
    team = Team(tmp_path, api)
    team.branch("once", "shot[n=1]")
    team.branch("twice", "shot[n=1]", rerolls=2)
    paid = created(api)
    merger = team.clone("merger")
    team.git(merger, "merge", "--no-edit", "origin/once")
    conflicted = team.git(merger, "merge", "--no-edit", "origin/twice", check=False)
    assert conflicted.returncode != 0 and "CONFLICT" in conflicted.stdout
    text = (merger / LOCK).read_text(encoding="utf-8")
    assert text.count("<<<<<<<") == 1  # only the instance both re-ran
    plan = team.civflow(merger, "plan", "pipelines/sweep.yaml")
    assert plan.returncode == 2 and "lock repair" in plan.stderr and "delete" not in plan.stderr
    repaired = team.civflow(merger, "lock", "repair", LOCK)  # the lockfile itself will do
    assert repaired.returncode == 0, repaired.stderr
    assert "4 instances, 1 earlier results" in repaired.stdout, repaired.stdout
    backups = list((merger / ".civflow" / "backups").iterdir())
    assert len(backups) == 1 and "<<<<<<<" in backups[0].read_text(encoding="utf-8")
    lock = Lockfile.load(merger / LOCK)
    assert lock is not None and len(lock.alternates) == 1
    team.commit(merger, "merge twice")
    run = team.civflow(merger, "run", "pipelines/sweep.yaml", "--yes")
    assert run.returncode == 0 and created(api) == paid, run.stderr


def test_repair_without_journals_keeps_every_intact_entry_of_a_damaged_file(
        tmp_path: Path, api: RunningEmulator) -> None:
    team = Team(tmp_path, api)
    clone = team.clone("fresh")  # no .civflow/runs: nothing but the file to go by
    path = clone / LOCK
    whole = path.read_text(encoding="utf-8")
    path.write_text(whole[:-50], encoding="utf-8")  # the end of the last entry cut off
    done = team.civflow(clone, "lock", "repair", "pipelines/sweep.yaml")
    assert done.returncode == 0 and "3 instances" in done.stdout, done.stdout + done.stderr
    assert "cut short" in done.stderr and "shot[n=4]" not in done.stdout
    intact = Lockfile.from_json(whole, "x")
    repaired = Lockfile.load(path)
    assert repaired is not None
    assert repaired.instances == {n: e for n, e in intact.instances.items() if n != "shot[n=4]"}
    path.write_text(whole, encoding="utf-8")
    # A line broken in the middle: refused, the file untouched.
    lines = whole.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if '"shot[n=2]"' in line)
    lines[index] = lines[index].replace('"fingerprint"', '"fingerprint', 1)
    broken = "".join(lines)
    path.write_text(broken, encoding="utf-8")
    refused = team.civflow(clone, "lock", "repair", LOCK)
    assert refused.returncode == 2 and f"{LOCK}:{index + 1}:1" in refused.stderr, refused
    assert path.read_text(encoding="utf-8") == broken
    assert created(api) == 4


def test_earlier_results_stay_bounded_over_many_conflicting_merges(tmp_path: Path) -> None:
    """20 merges in which both branches re-made the same instance: the file keeps at
    most MAX_EARLIER earlier results per instance, whatever happens."""
    repo = tmp_path / "repo"
    team = Team.__new__(Team)
    team.git(tmp_path, "init", "-q", "-b", "main", str(repo))
    path = repo / "p.lock.json"

    def entry(name: str, fp: str, when: str) -> LockedInstance:
        return LockedInstance(name, "shot", "imageGen", fp, {"input": {"prompt": fp}}, 1,
                              f"0-{fp}", 1.0, when, {}, ())
    names = [f"shot[n={i}]" for i in range(10)]
    Lockfile("p", {n: entry(n, f"{n}-base", "2026-01-01") for n in names}).save(path)
    team.commit(repo, "base")
    sizes = []
    for round_ in range(20):
        for side in ("a", "b"):
            team.git(repo, "checkout", "-q", "-b", f"{side}{round_}", "main")
            lock = Lockfile.load(path)
            assert lock is not None
            fresh = entry(names[0], f"{side}{round_}", f"2026-02-{round_ + 1:02d}T0{side == 'b'}")
            Lockfile("p", {**lock.instances, names[0]: fresh}, {}, lock.alternates).save(path)
            team.commit(repo, side)
        team.git(repo, "checkout", "-q", "main")
        team.git(repo, "merge", "-q", "--no-edit", f"a{round_}")
        assert team.git(repo, "merge", "--no-edit", f"b{round_}", check=False).returncode
        from civflow.cli import main
        with pytest.raises(SystemExit) as done:
            main(["lock", "repair", str(path)])
        assert done.value.code == 0
        team.commit(repo, f"merge {round_}")
        sizes.append(len(path.read_text(encoding="utf-8").splitlines()))
        lock = Lockfile.load(path)
        assert lock is not None and len(lock.alternates) <= MAX_EARLIER
    assert len(set(sizes)) == 1  # every earlier result rides on its instance's line
