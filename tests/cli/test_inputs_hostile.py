"""Promise: `civflow validate` (the CI command) answers every hostile input quickly with a
located error and exit 2 or a clean access error, never a traceback, a hang or a crash;
`civflow emulator` refuses impossible option values as usage errors.

Everything runs through the real command line, in-process. No test asserts on time:
a case that is not bounded simply never finishes.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from civflow.cli import main

HEAD = """\
version: 1
name: hostile
vars:
  subject: a fox
  n: 3
steps:
  base:
    type: imageGen
    input:
      operation: createImage
      engine: sdcpp
      ecosystem: sdxl
      model: urn:air:sdxl:checkpoint:civitai:101055@128078
      prompt: "{{ subject }}"
  hero:
    type: imageGen
    input:
      operation: createImage
      engine: sdcpp
      ecosystem: sdxl
      model: urn:air:sdxl:checkpoint:civitai:101055@128078
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


def _pipeline(tmp_path: Path, prompt: str, extra: str = "") -> Path:
    """The pipeline above with `hero`'s prompt set to `prompt` (a YAML single-quoted string)."""
    quoted = "'" + prompt.replace("'", "''") + "'"
    path = tmp_path / "hostile.yaml"
    path.write_text(HEAD + f"      prompt: {quoted}\n" + extra, encoding="utf-8")
    return path


PROMPT_LINE = HEAD.count("\n") + 1


@pytest.mark.parametrize("prompt,words", [
    ("{{ 9 ** (9 ** 10) }}", "more than 4,096 bits"),
    ("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}",
     "loop iterations"),
    ('{{ "a" * 3000000000 }}', "3,000,000,000 characters or items"),
    ("{{ range(10 ** 12) | list | length }}", "range() of more than"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}{{ ns.s }}", "characters or items"),
    ("{{ (['abcdefgh' * 400000] * 100) | join }}", "characters or items"),
    ("{{ '%0999999999d' | format(n) }}", "format width"),
    ("{% macro f(x) %}{{ f(x) }}{{ f(x) }}{% endmacro %}{{ f(1) }}", "nested more than"),
])
def test_templates_that_would_hang_or_eat_memory_fail_validate(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, prompt: str, words: str) -> None:
    path = _pipeline(tmp_path, prompt)
    code, out, err = run(capsys, "validate", str(path))
    assert code == 2, out + err
    assert out.startswith(f"{path}:{PROMPT_LINE}:")
    assert "in step 'hero': template limit: " in out and words in out
    assert "  hint: " in out
    assert "Traceback" not in out + err


@pytest.mark.parametrize("prompt,words", [
    ("{{ 1/0 }}", "ZeroDivisionError: division by zero"),
    ("{{ subject > n }}", "'>' not supported between instances of 'str' and 'int'"),
    ("{{ steps.base.output.images[0].url ~ (1/0) }}", "ZeroDivisionError"),
    ("{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(steps.base.output) }}", "nested more than"),
])
def test_template_errors_are_not_hidden_as_pending(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, prompt: str, words: str) -> None:
    # The context of validate always holds placeholders (outputs, run.id); an error that
    # has nothing to do with them used to pass as "pending".
    path = _pipeline(tmp_path, prompt)
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 2
    assert out.startswith(f"{path}:{PROMPT_LINE}:")
    assert words in out


@pytest.mark.parametrize("prompt", [
    "{{ steps.base.output.images[0].url }}",
    "{% for i in steps.base.output.images %}{{ i.url }} {% endfor %}",
    "{% if steps.base.output.images | length > 1 %}many{% endif %}",
])
def test_genuine_placeholders_still_validate(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, prompt: str) -> None:
    path = _pipeline(tmp_path, prompt)
    code, out, err = run(capsys, "validate", str(path))
    assert (code, err) == (0, ""), out
    assert out == f"{path}: ok (2 steps)\n"


def test_dev_zero_and_fifos_are_refused(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # no writer: a plain read would block forever
    for path in ("/dev/zero", str(fifo)):
        code, out, _ = run(capsys, "validate", path)
        assert code == 1
        assert f"{path}: cannot access: not a regular file" in out
        good = _pipeline(tmp_path, "{{ subject }}")
        code, out, err = run(capsys, "validate", "--vars-file", path, str(good))
        assert code == 1
        assert f"{path}: cannot access: not a regular file" in out + err


def test_a_pipeline_over_the_size_cap_is_refused(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as handle:
        handle.write(b"version: 1\n")
        handle.truncate(9 * 2**20)  # sparse
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 2
    assert out.startswith(f"{path}:1:1: the file is larger than 8 MiB\n")


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return _pipeline(tmp_path, "{{ subject }} {{ n }}")


@pytest.mark.parametrize("content,words", [
    (b"subject: \xff\n", ":1:10: the file is not valid UTF-8 (byte 0xff)"),
    (b"subject: &a [*a]\n", ":1:10: an alias refers to a node that contains it"),
    (b"subject: !!binary aGVsbG8=\n", ":1:10: the YAML tag '!!binary' is not allowed"),
    (b"n: " + b"1" + b"0" * 3000 + b"\n", ":1:4: variable n: the integer is out of range"),
])
def test_hostile_vars_files_are_located(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                        good: Path, content: bytes, words: str) -> None:
    vars_file = tmp_path / "vars.yaml"
    vars_file.write_bytes(content)
    code, out, err = run(capsys, "validate", "--vars-file", str(vars_file), str(good))
    assert code == 2
    assert f"{vars_file}{words}" in out + err
    assert "Traceback" not in out + err


def test_an_integer_key_in_a_vars_file_is_an_unknown_variable(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, good: Path) -> None:
    vars_file = tmp_path / "vars.yaml"
    vars_file.write_bytes(b"1: one\n")
    code, out, err = run(capsys, "validate", "--vars-file", str(vars_file), str(good))
    assert code == 2
    assert "unknown variable '1'" in out + err


def test_a_date_var_stays_text_through_render(capsys: pytest.CaptureFixture[str],
                                              good: Path) -> None:
    # A date read as datetime.date crashed json.dumps in `render` and in the lockfile.
    code, out, err = run(capsys, "render", "--var", "subject=2024-01-01", str(good))
    assert (code, err) == (0, "")
    assert '"prompt": "2024-01-01 3"' in out


@pytest.mark.parametrize("pair,words", [
    ("n=" + "1" + "0" * 5000, "--var n: the integer is out of range"),
    ("subject=!!binary aGVsbG8=", "--var subject: YAML tags such as '!!binary' are not allowed"),
    ("n=.inf", "--var n: inf is not a finite number"),
])
def test_hostile_var_values_are_usage_errors(capsys: pytest.CaptureFixture[str], good: Path,
                                             pair: str, words: str) -> None:
    code, out, err = run(capsys, "validate", "--var", pair, str(good))
    assert code == 2
    assert words in out + err
    assert "Traceback" not in out + err


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("option,value", [
    ("--port", "70000"), ("--port", "-1"), ("--fault-seed", "-3"),
    ("--time-scale", "nan"), ("--time-scale", "-1"), ("--error-rate", "2"),
    ("--drop-rate", "nan"), ("--latency-ms", "inf"), ("--url-lifetime", "0"),
    ("--buzz", "-5"), ("--rate-limit-rps", "0"),
])
def test_emulator_options_out_of_range_are_usage_errors(
        capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    code, _, err = run(capsys, "emulator", option, value)
    assert code == 2
    assert f"Invalid value for '{option}'" in err


def test_emulator_on_a_busy_port_is_a_clean_error(capsys: pytest.CaptureFixture[str],
                                                  busy_port: int) -> None:
    code, _, err = run(capsys, "emulator", "--port", str(busy_port))
    assert code == 1
    assert f"cannot listen on 127.0.0.1:{busy_port}" in err
    assert "Traceback" not in err
