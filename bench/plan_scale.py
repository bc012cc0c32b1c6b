"""How validate + plan scale with the number of step instances: wall time, peak memory, ratios.

Run: .venv/bin/python bench/plan_scale.py [--sizes 10,100,1000,10000]

Two pipeline shapes per size N, written to a temp dir and loaded like any file:
  matrix  one imageGen step with an N-value matrix, a fan-out over its outputs and a
          short chain after it (many instances, few steps);
  chain   N steps, each reading the previous step's output (many steps, deep graph).
Each size is timed with the clock alone; peak memory comes from a second run under
tracemalloc, which slows Python down and must not pollute the times.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from civflow.check import check_pipeline
from civflow.loading import load_pipeline
from civflow.planning import plan

HEAD = """\
version: 1
name: bench
vars:
  subject: a lighthouse in a storm
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: urn:air:sdxl:checkpoint:civitai:101055@128078
    width: 832
    height: 1216
    steps: 25
    cfgScale: 6
steps:
"""


def matrix_pipeline(n: int) -> str:
    seeds = ", ".join(str(i) for i in range(n))
    return HEAD + f"""\
  sweep:
    type: imageGen
    matrix:
      seed: [{seeds}]
    input:
      prompt: "{{{{ subject }}}}, seed {{{{ matrix.seed }}}}"
      seed: "{{{{ matrix.seed }}}}"
  web:
    type: convertImage
    foreach: "{{{{ steps.sweep.outputs }}}}"
    input:
      image: "{{{{ item.images[0].url }}}}"
      output: {{format: webp, quality: 85, lossless: false, hideMetadata: true}}
  pick:
    type: imageUpscaler
    input:
      image: "{{{{ steps.sweep.outputs[0].images[0].url }}}}"
      numberOfRepeats: 1
"""


def chain_pipeline(n: int) -> str:
    lines = [HEAD, """\
  s0:
    type: imageGen
    input:
      prompt: "{{ subject }}"
      seed: 1
"""]
    lines.append("""\
  s1:
    type: imageUpscaler
    input:
      image: "{{ steps.s0.output.images[0].url }}"
      numberOfRepeats: 1
""")
    for i in range(2, n):
        lines.append(f"""\
  s{i}:
    type: imageUpscaler
    input:
      image: "{{{{ steps.s{i - 1}.output.blob.url }}}}"
      numberOfRepeats: 1
""")
    return "".join(lines)


def measure(path: Path) -> tuple[float, float, int]:
    """(validate seconds, plan seconds, instances planned)."""
    gc.collect()
    start = time.perf_counter()
    checked = check_pipeline(load_pipeline(path))
    validated = time.perf_counter()
    result = plan(checked)
    done = time.perf_counter()
    return validated - start, done - validated, len(result.instances)


def peak_mib(path: Path) -> float:
    gc.collect()
    tracemalloc.start()
    try:
        plan(check_pipeline(load_pipeline(path)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--shapes", default="matrix,chain")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    shapes: dict[str, Callable[[int], str]] = {"matrix": matrix_pipeline,
                                               "chain": chain_pipeline}
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes.split(","):
            print(f"\n{shape}: validate + plan")
            print(f"{'N':>7} {'instances':>9} {'validate s':>11} {'plan s':>8} {'total s':>8} "
                  f"{'us/inst':>8} {'peak MiB':>9} {'x time':>7} {'x mem':>6}")
            previous: tuple[float, float] | None = None
            for n in sizes:
                path = Path(tmp) / f"{shape}-{n}.yaml"
                path.write_text(shapes[shape](n), encoding="utf-8")
                measure(path)  # warm caches (imports, schema compilation) once per size
                validate_s, plan_s, count = measure(path)
                total = validate_s + plan_s
                peak = peak_mib(path)
                ratio = (f"{total / previous[0]:7.1f} {peak / previous[1]:6.1f}"
                         if previous else f"{'':>7} {'':>6}")
                print(f"{n:>7} {count:>9} {validate_s:>11.3f} {plan_s:>8.3f} {total:>8.3f} "
                      f"{total / count * 1e6:>8.0f} {peak:>9.1f} {ratio}")
                previous = (total, peak)
    print("\nx time / x mem: ratio to the previous size (10x more instances; ~10 is linear)")


if __name__ == "__main__":
    main()
