"""Broken pipelines and the exact words `civflow validate` says about each.

Every `NAME.yaml` here shows one realistic mistake (or, for VALID_CASES, a pipeline
that validates with a note); `NAME.expected` is the output of `civflow validate
NAME.yaml` run from this folder. Regenerate with
`CIVFLOW_UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden`, then read every diff:
a golden freezes a message, so an unclear one is fixed in the code, not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from civflow.cli import main

HERE = Path(__file__).resolve().parent
CASES = sorted(p.name for p in HERE.glob("*.yaml"))
# Pipelines that validate, with a note that must stay visible (exit 0).
VALID_CASES = frozenset({"unchecked-engine.yaml"})
UPDATE = os.environ.get("CIVFLOW_UPDATE_GOLDEN") == "1"


def _validate(name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
              ) -> tuple[int, str]:
    monkeypatch.chdir(HERE)
    with pytest.raises(SystemExit) as info:
        main(["validate", name])
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.out + out.err


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str, monkeypatch: pytest.MonkeyPatch,
                capsys: pytest.CaptureFixture[str]) -> None:
    code, output = _validate(name, monkeypatch, capsys)
    expected_file = HERE / name.replace(".yaml", ".expected")
    if UPDATE:
        expected_file.write_text(output, encoding="utf-8")
    assert code == (0 if name in VALID_CASES else 2), output
    assert "Traceback" not in output
    # Every message is located: file:line:col, the line itself, and a hint; a mistake in
    # an included template is located in that file, naming the pipeline line that
    # includes it.
    first = output.splitlines()[0]
    assert first.startswith(f"{name}:") or f" (included from {name}:" in first, output
    if name in VALID_CASES:
        assert ": warning: " in output and output.endswith(": ok (1 steps)\n"), output
    assert "  hint: " in output, output
    assert expected_file.exists(), f"run with CIVFLOW_UPDATE_GOLDEN=1 to create {expected_file}"
    assert output == expected_file.read_text(encoding="utf-8")


def test_the_real_cli_agrees_with_the_goldens() -> None:
    """One `civflow validate` process over every case: exit 2, the goldens concatenated."""
    result = subprocess.run([sys.executable, "-m", "civflow", "validate", *CASES], cwd=HERE,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr == ""
    expected = "".join((HERE / n.replace(".yaml", ".expected")).read_text(encoding="utf-8")
                       for n in CASES)
    assert result.stdout == expected


def test_github_format_annotates_each_error() -> None:
    result = subprocess.run([sys.executable, "-m", "civflow", "validate", "--format", "github",
                             "output-path-typo.yaml", "tabs.yaml"], cwd=HERE,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("::error file=output-path-typo.yaml,line=")
    assert lines[1].startswith("::error file=tabs.yaml,line=9,col=1::")
