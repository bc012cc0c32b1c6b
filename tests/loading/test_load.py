"""load_pipeline: reading files, typed specs, defaults merging and variable overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.errors import FileAccessError, PipelineInvalid, PipelineNotFound, UsageError
from civflow.loading import load_pipeline, parse_var_overrides, read_source
from civflow.loading.model import deep_merge

PIPELINE = """\
version: 1
name: demo
vars:
  subject: a fox
  seed: 7
defaults:
  imageGen:
    engine: sdcpp
    model: m
    loras: {x: 1}
workflow:
  tags: [demo]
  priority: low
  nsfwLevel: pg
steps:
  hero:
    type: imageGen
    input:
      prompt: "{{ subject }}"
      loras: {y: 2}
      model: own
  sweep:
    type: imageGen
    matrix: {s: [1, 2]}
    needs: [hero]
    timeout: "00:05:00"
    input: {prompt: x}
"""


@pytest.fixture
def pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "demo.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    return path


def test_typed_spec(pipeline: Path) -> None:
    spec = load_pipeline(pipeline)
    assert spec.name == "demo"
    assert list(spec.steps) == ["hero", "sweep"]
    hero, sweep = spec.steps["hero"], spec.steps["sweep"]
    # Mappings merge, the step's own value wins, keys from defaults are remembered.
    assert hero.input == {"engine": "sdcpp", "model": "own", "loras": {"x": 1, "y": 2},
                          "prompt": "{{ subject }}"}
    assert ("engine",) in hero.defaulted and ("model",) not in hero.defaulted
    assert ("loras", "x") in hero.defaulted
    assert sweep.matrix == (("s", (1, 2)),) and sweep.fans_out and not hero.fans_out
    assert sweep.needs == ("hero",)
    assert sweep.options("low") == {"timeout": "00:05:00", "priority": "low"}
    assert spec.tags == ("demo",)
    assert spec.workflow == {"nsfwLevel": "pg", "priority": "low"}
    assert spec.lockfile_path == pipeline.with_name("demo.lock.json")


def test_locations_of_defaulted_values_point_into_defaults(pipeline: Path) -> None:
    spec = load_pipeline(pipeline)
    assert spec.input_path("hero", ("engine",)) == ("defaults", "imageGen", "engine")
    assert spec.input_location("hero", ("engine",)).line == 8
    assert spec.input_location("hero", ("prompt",)).line == 19


def test_overrides_apply_and_unknown_names_list_the_known(pipeline: Path) -> None:
    spec = load_pipeline(pipeline, {"subject": "an owl"})
    assert spec.vars == {"subject": "an owl", "seed": 7}
    with pytest.raises(UsageError) as info:
        load_pipeline(pipeline, {"subjet": "x"})
    assert info.value.message == "unknown variable 'subjet' (known: seed, subject)"
    assert info.value.hint == "did you mean 'subject'?"


def test_deep_merge_replaces_lists() -> None:
    merged, from_base = deep_merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3]})
    assert merged == {"a": [3], "b": {"c": 1}}
    assert from_base == {("b",)}


def test_var_overrides_read_yaml_scalars(tmp_path: Path) -> None:
    vars_file = tmp_path / "v.yaml"
    vars_file.write_text("seed: 1\nsubject: from file\n", encoding="utf-8")
    values = parse_var_overrides(["seed=42", "flag=true", "text=a: b", "list=[1, 2]",
                                  "empty="], [vars_file])
    assert values == {"seed": 42, "subject": "from file", "flag": True, "text": "a: b",
                      "list": [1, 2], "empty": ""}


@pytest.mark.parametrize("pair", ["novalue", "=x"])
def test_malformed_var_is_a_usage_error(pair: str) -> None:
    with pytest.raises(UsageError, match="expected NAME=VALUE"):
        parse_var_overrides([pair])


def test_vars_file_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        parse_var_overrides([], [tmp_path / "missing.yaml"])
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(PipelineInvalid, match="expected a mapping") as info:
        parse_var_overrides([], [listed])
    assert str(info.value.diagnostics[0].location) == f"{listed}:1:1"


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(PipelineNotFound):
        read_source(tmp_path / "nope.yaml")
    with pytest.raises(FileAccessError, match="is a directory"):
        read_source(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nname: \xff\n")
    with pytest.raises(PipelineInvalid) as info:
        read_source(bad)
    assert str(info.value.diagnostics[0].location) == f"{bad}:2:7"
    assert info.value.diagnostics[0].message == "the file is not valid UTF-8 (byte 0xff)"
    nul = tmp_path / "nul.yaml"
    nul.write_bytes(b"version: 1\x00\n")
    with pytest.raises(PipelineInvalid, match="NUL byte"):
        read_source(nul)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + PIPELINE.encode())
    assert read_source(path).data["name"] == "demo"
