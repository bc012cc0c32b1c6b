"""A/B of `civflow run` between two revisions, side by side against one served emulator.

`bench/run_overhead.py` gives absolute ratios, and on a shared machine they move by
±0.1 x the critical path between runs of the same code. Whether a change made a run
faster is better told by running the old and the new code in turns, in one process
tree, on one emulator: whatever slows the machine slows both alike.

Each revision is checked out into a temporary git worktree (compiled once); the runs
alternate (A B, B A, ...), each from an emptied emulator, lockfile and journal, with
`python -m civflow run` as a user starts it. Prints, per revision, the median and the
minimum wall time, the median as a ratio of the critical path, and the median CPU time
of civflow's process: work a change saved shows there even when the machine's speed
moves the wall times more than the change does.
Run: .venv/bin/python bench/run_ab.py [--base HEAD~1] [--head WORKTREE] [--case dag|lanes]
     [--width 1000] [--repeat 8]
(--head defaults to this working tree, uncommitted changes included.)
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.run_overhead import (  # the bench folder is not a package: found by path
    JOB_SECONDS,
    KEY,
    LAYERS,
    REPO,
    _as_installed,
    _serve,
    lanes,
    pipeline,
)


def _checkout(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(into),
                    revision], check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(into / "civflow")],
                   check=True, stdout=subprocess.DEVNULL)
    return into


def _one(url: str, tree: Path, folder: Path, name: str, text: str, width: int,
         timeout: float) -> tuple[float, float]:
    """One run: its wall time and the CPU time civflow's process used."""
    shutil.rmtree(folder, ignore_errors=True)
    (folder / ".civflow").mkdir(parents=True)
    (folder / "pipelines").mkdir()
    (folder / "pipelines" / f"{name}.yaml").write_text(text)
    httpx.post(f"{url}/_emulator/reset")
    env = _as_installed()
    env.update(CIVITAI_BASE_URL=url, CIVITAI_API_KEY=KEY, PYTHONPATH=str(tree))
    spent = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "civflow", "run", f"pipelines/{name}.yaml", "--yes",
         "--concurrency", str(width)], cwd=folder, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: civflow run exited {done.returncode}\n{done.stderr[-2000:]}")
    return took, (after.ru_utime + after.ru_stime) - (spent.ru_utime + spent.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="HEAD~1", help="git revision of A")
    parser.add_argument("--head", default=str(REPO), help="source tree of B")
    parser.add_argument("--case", choices=("dag", "lanes"), default="dag")
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    name = f"{args.case}{args.width}"
    text = pipeline(args.width) if args.case == "dag" else lanes(args.width)
    bound = len(LAYERS) * JOB_SECONDS
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    url = parent.recv()
    with tempfile.TemporaryDirectory(prefix="civflow-ab-") as tmp:
        base = _checkout(args.base, Path(tmp) / "base")
        try:
            trees = {f"A {args.base}": base, f"B {args.head}": Path(args.head)}
            times: dict[str, list[tuple[float, float]]] = {label: [] for label in trees}
            for turn in range(args.repeat):
                order = list(trees.items()) if turn % 2 == 0 else list(trees.items())[::-1]
                for label, tree in order:
                    times[label].append(_one(url, tree, Path(tmp) / "project", name, text,
                                             args.width, args.timeout))
            print(f"{name}: {args.repeat} runs each, alternating; critical path {bound:g} s")
            for label, seen in times.items():
                walls, cpus = [w for w, _ in seen], [c for _, c in seen]
                median = statistics.median(walls)
                print(f"  {label:40} median {median:6.3f} s = {median / bound:4.2f} x   "
                      f"min {min(walls):6.3f} s   civflow CPU median "
                      f"{statistics.median(cpus):6.3f} s")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(base)], check=False)
            parent.send("stop")
            server.join(5)


if __name__ == "__main__":
    main()
