"""Promise: any pipeline file, --vars-file or --var gives a clean, located error or a clean
value, never a traceback, a hang or an unbounded read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from civflow.errors import FileAccessError, PipelineInvalid, UsageError
from civflow.loading import MAX_FILE_BYTES, parse_var_overrides, read_source


def _vars_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "vars.yaml"
    path.write_bytes(content)
    return path


def _file_error(path: Path) -> PipelineInvalid:
    with pytest.raises(PipelineInvalid) as info:
        parse_var_overrides([], [path])
    return info.value


def test_a_non_utf8_vars_file_is_located(tmp_path: Path) -> None:
    path = _vars_file(tmp_path, b"subject: fox\nstyle: \xff\n")
    diag = _file_error(path).diagnostics[0]
    assert str(diag.location) == f"{path}:2:8"
    assert diag.message == "the file is not valid UTF-8 (byte 0xff)"


@pytest.mark.parametrize("content,message,where", [
    (b"a: &a [*a]\n", "an alias refers to a node that contains it", "1:4"),
    (b"a: &a [1, 2]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
     b"d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     b"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
     b"f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n", "expands to more than", None),
    (b"b: !!binary aGVsbG8=\n", "the YAML tag '!!binary' is not allowed", "1:4"),
    (b"n: " + b"9" * 4000 + b"\n", "variable n: the integer is out of range", "1:4"),
    (b"x:\n  y: [1, .inf]\n", "variable x.y.1: inf is not a finite number", "2:10"),
    (b"- 1\n", "expected a mapping of variable names to values, not a list", "1:1"),
    (b"a: " + b"[" * 40 + b"]" * 40 + b"\n", "nested deeper than 32 levels", None),
    (b"a: " + b"[" * 3000 + b"]" * 3000 + b"\n", "", None),
])
def test_hostile_vars_files_are_located_errors(tmp_path: Path, content: bytes, message: str,
                                               where: str | None) -> None:
    path = _vars_file(tmp_path, content)
    diag = _file_error(path).diagnostics[0]
    assert message in diag.message
    assert diag.location is not None and diag.location.file == str(path)
    if where:
        assert f"{diag.location.line}:{diag.location.col}" == where


def test_dates_and_integer_keys_in_a_vars_file_stay_json_data(tmp_path: Path) -> None:
    path = _vars_file(tmp_path, b"day: 2024-01-01\n1: one\nwhen: 2024-01-01T10:00:00Z\n")
    values = parse_var_overrides([], [path])
    assert values == {"day": "2024-01-01", "1": "one", "when": "2024-01-01T10:00:00Z"}
    json.dumps(values)  # the lockfile and request bodies are JSON


def test_an_empty_vars_file_sets_nothing(tmp_path: Path) -> None:
    assert parse_var_overrides([], [_vars_file(tmp_path, b"# nothing\n")]) == {}


@pytest.mark.parametrize("pair,expected", [
    ("d=2024-01-01", "2024-01-01"),
    ("t=2024-01-01 10:00:00", "2024-01-01 10:00:00"),
    ("l=[2024-01-01, 3]", ["2024-01-01", 3]),
    ("s=*bold* fox", "*bold* fox"),
    ("n=9223372036854775807", 2**63 - 1),
])
def test_var_values_are_json_data(pair: str, expected: object) -> None:
    values = parse_var_overrides([pair])
    assert list(values.values()) == [expected]
    json.dumps(values)


@pytest.mark.parametrize("pair,words", [
    ("b=!!binary aGVsbG8=", "YAML tags such as '!!binary' are not allowed"),
    ("n=" + "1" + "0" * 5000, "the integer is out of range"),
    ("n=9223372036854775808", "the integer is out of range"),
    ("x=.nan", "nan is not a finite number"),
    ("x=[1, &a [*a]]", "an alias refers to a node that contains it"),
    ("x=[1, .inf]", "--var x[1]: inf is not a finite number"),
    ("x=[1, 2", "not closed"),
])
def test_bad_var_values_are_usage_errors(pair: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_var_overrides([pair])
    assert words in info.value.message
    assert info.value.hint


@pytest.mark.parametrize("reader", ["pipeline", "vars"])
def test_devices_and_fifos_are_refused_without_reading(tmp_path: Path, reader: str) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # no writer: reading it would block forever
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(FileAccessError, match="not a regular file"):
            if reader == "pipeline":
                read_source(path)
            else:
                parse_var_overrides([], [path])


@pytest.mark.parametrize("reader", ["pipeline", "vars"])
def test_files_over_the_cap_are_refused(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as handle:
        handle.write(b"a: 1\n")
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse
    with pytest.raises(PipelineInvalid) as info:
        if reader == "pipeline":
            read_source(path)
        else:
            parse_var_overrides([], [path])
    assert info.value.diagnostics[0].message == "the file is larger than 8 MiB"
    assert str(info.value.diagnostics[0].location) == f"{path}:1:1"


def test_a_deeply_nested_pipeline_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\nname: x\nsteps: " + "[" * 3000 + "]" * 3000 + "\n",
                    encoding="utf-8")
    with pytest.raises(PipelineInvalid):
        read_source(path)
