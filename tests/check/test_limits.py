"""Bounded plans: a pipeline's instance count is checked from its matrix sizes and
known fan-outs before anything is expanded, so a hostile file is answered at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from civflow.check import check_file
from civflow.errors import PipelineInvalid

REPO = Path(__file__).resolve().parents[2]


def _sweep(axes: dict[str, int], extra: str = "", after: str = "") -> str:
    matrix = "".join(f"      {k}: [{', '.join(str(i) for i in range(n))}]\n"
                     for k, n in axes.items())
    return (f"version: 1\nname: sweep\n{extra}steps:\n  shot:\n    type: echo\n"
            f"    matrix:\n{matrix}    input:\n      message: \"take {{{{ matrix.a }}}}\"\n{after}")


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "sweep.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        check_file(path)
    except PipelineInvalid as exc:
        return [d.render() for d in exc.diagnostics if d.is_error]
    return []


# `civflow validate` in a process of its own that reports its own peak memory, so no
# earlier child of the test run (a browser, a server) is counted.
MEASURED = """\
import resource, sys
from civflow.cli import main
try:
    main(sys.argv[1:])
finally:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def test_a_billion_instances_are_refused_before_expanding_in_little_memory(
        tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text(_sweep({"a": 1000, "b": 1000, "c": 1000}), encoding="utf-8")
    assert path.stat().st_size < 20_000
    done = subprocess.run([sys.executable, "-c", MEASURED, "validate", str(path)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    said = done.stdout + done.stderr
    assert done.returncode == 2, said
    assert f"{path}:7:7: step 'shot' expands to 1,000,000,000 instances" in said
    assert "limits: {instances: N}" in said and "Traceback" not in said
    peak_kib = int(done.stderr.strip().splitlines()[-1])
    # Expanding the matrix would take gigabytes; refusing it takes the interpreter's own.
    assert peak_kib < 200 * 1024, f"{peak_kib} KiB"


def test_the_limit_is_raised_explicitly_and_itself_bounded(tmp_path: Path) -> None:
    twelve = {"a": 3, "b": 4}
    assert _errors(tmp_path, _sweep(twelve, "limits:\n  instances: 12\n")) == []
    refused = _errors(tmp_path, _sweep(twelve, "limits:\n  instances: 11\n"))
    assert len(refused) == 1 and "expands to 12 instances (3 a × 4 b), more than the " \
        "pipeline's limit of 11" in refused[0]
    ceiling = _errors(tmp_path, _sweep(twelve, "limits:\n  instances: 1000000\n"))
    assert len(ceiling) == 1 and "100000" in ceiling[0], ceiling


@pytest.mark.parametrize("foreach, expected", [
    ("{{ steps.shot.outputs }}", 12),
    ("{{ steps.shot.instances }}", 12),
    ("{{ steps.hero.output.images }}", 8),
    ("{{ steps.hero.images }}", 8),  # 2 instances × quantity 4
])
def test_known_fan_outs_count(tmp_path: Path, foreach: str, expected: int) -> None:
    after = (
        "  hero:\n    type: imageGen\n    input:\n      engine: flux1\n"
        "      model: urn:air:flux1:checkpoint:civitai:618692@691639\n"
        "      prompt: a cat\n      quantity: 4\n"
        "    matrix:\n      m: [1, 2]\n"
        f"  fan:\n    type: echo\n    foreach: \"{foreach}\"\n"
        "    input:\n      message: \"{{ index }}\"\n")
    text = _sweep({"a": 3, "b": 4}, f"limits:\n  instances: {expected - 1}\n", after)
    refused = _errors(tmp_path, text)
    assert any(f"step 'fan' expands to {expected} instances" in e for e in refused), refused
