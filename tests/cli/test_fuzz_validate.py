"""Property: whatever YAML `civflow validate` is given, it answers 0 or 2, never a traceback."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from civflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {p.name: p.read_text(encoding="utf-8")
            for p in sorted((ROOT / "pipelines").glob("*.yaml"))}
FUZZ = settings(max_examples=int(os.environ.get("CIVFLOW_FUZZ_EXAMPLES", "75")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=12), st.sampled_from([
                        "{{ x }}", "{{ steps.hero.output.images[0].url }}", "{% if a %}",
                        "{{ item.url }}", "{{ matrix.seed }}", "imageGen", "00:10:00", "1",
                    ]))
keys = st.one_of(st.sampled_from(["version", "name", "steps", "type", "input", "vars",
                                  "defaults", "workflow", "matrix", "foreach", "when",
                                  "needs", "prompt", "engine", "hero", "tags", "priority"]),
                 st.text(min_size=1, max_size=8))
documents = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=25)

TEMPLATE_BITS = ["{{", "}}", "{%", "%}", "{{ steps.hero.output }}", "{{ nope }}",
                 "{% include '../x' %}", "{{ item }}", "{{ 1/0 }}", "{{ ''.__class__ }}",
                 "{{ steps }}", "{{ steps.x.outputs[0] }}", "*a", "&a", "<<: *a", "\t", "!!str",
                 ": :", "- -", "'", '"', "#", "|", ">"]


@st.composite
def mutated_examples(draw: st.DrawFn) -> str:
    lines = EXAMPLES[draw(st.sampled_from(sorted(EXAMPLES)))].splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        kind = draw(st.sampled_from(["delete", "duplicate", "rename", "retype", "template",
                                     "indent"]))
        head, sep, _value = line.partition(":")
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "rename" and sep:
            indent = head[: len(head) - len(head.lstrip())]
            lines[i] = indent + draw(keys) + ":" + line.partition(":")[2]
        elif kind == "retype" and sep:
            lines[i] = head + ": " + draw(st.sampled_from(
                ["1", "true", "[]", "{}", "null", "'x'", "[1, 2]", "{a: 1}", "-3.5", "~"]))
        elif kind == "template":
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.sampled_from(TEMPLATE_BITS)) + line[at:]
        else:
            stripped = line.lstrip(" ")
            lines[i] = " " * draw(st.integers(0, 9)) + stripped
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "pipelines"
        shutil.copytree(ROOT / "pipelines", target,
                        ignore=shutil.ignore_patterns("*.lock.json"))
        yield target


def _validate(folder: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    path = folder / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    out = capsys.readouterr()
    assert info.value.code in (0, 2), out.out + out.err
    assert "Traceback" not in out.out + out.err
    if info.value.code == 2:
        assert f"{path}:" in out.out  # the complaint is located in the file
    return out.out


@FUZZ
@given(documents)
def test_random_yaml_documents(folder: Path, capsys: pytest.CaptureFixture[str],
                               data: object) -> None:
    _validate(folder, yaml.safe_dump(data, allow_unicode=True), capsys)


@FUZZ
@given(mutated_examples())
def test_mutated_example_pipelines(folder: Path, capsys: pytest.CaptureFixture[str],
                                   text: str) -> None:
    _validate(folder, text, capsys)


def test_missing_file_is_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", str(tmp_path / "gone.yaml")])
    assert info.value.code == 4
    assert "Traceback" not in capsys.readouterr().out


def test_engine_given_as_a_list(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Found by the fuzzer: a non-string discriminator once crashed the catalog.
    text = EXAMPLES["hero-shot.yaml"].replace("    engine: sdcpp", "    engine: []")
    assert "'engine' must be a string, got a list" in _validate(folder, text, capsys)
