"""Promise: a deeply nested lockfile or journal line is a clean error, never a RecursionError.

JSON such as `[[[[...]]]]` 100,000 levels deep makes `json.loads` (or any code that
later walks the value) exceed Python's recursion limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from civflow.errors import FileAccessError, PipelineInvalid
from civflow.store.journal import MAX_DEPTH as JOURNAL_DEPTH
from civflow.store.journal import Journal
from civflow.store.lockfile import MAX_DEPTH as LOCK_DEPTH
from civflow.store.lockfile import Lockfile

DEEP = "[" * 100_000 + "]" * 100_000


def _nested(levels: int) -> object:
    value: object = "x"
    for _ in range(levels):
        value = {"k": value}
    return value


def test_a_lockfile_100k_levels_deep_is_a_broken_lockfile(tmp_path: Path) -> None:
    path = tmp_path / "p.lock.json"
    path.write_text(DEEP, encoding="utf-8")
    with pytest.raises(PipelineInvalid) as info:
        Lockfile.load(path)
    assert info.value.diagnostics[0].message == (
        f"broken lockfile: values nest more than {LOCK_DEPTH} levels deep")
    assert str(info.value.diagnostics[0].location) == f"{path}:1:1"


def test_a_lockfile_output_nested_past_the_bound_is_refused(tmp_path: Path) -> None:
    # Deep enough to be damage, shallow enough for json.loads: the walk is what is bounded.
    document = {"schema": 1, "pipeline": "p", "instances": {"a": {"output": _nested(500)}}}
    path = tmp_path / "p.lock.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(PipelineInvalid, match="nest more than"):
        Lockfile.load(path)


@pytest.mark.parametrize("line", [DEEP, json.dumps({"event": "finished", "x": _nested(500)})])
def test_a_journal_line_nested_too_deep_is_a_file_access_error(tmp_path: Path,
                                                               line: str) -> None:
    journal = Journal.create(tmp_path, "p")
    journal.append({"event": "run-started"})
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    with pytest.raises(FileAccessError) as info:
        journal.records()
    assert info.value.message.endswith(
        f"line 2 nests more than {JOURNAL_DEPTH} levels deep")


def test_run_metadata_nested_too_deep_is_unreadable(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "p")
    (journal.run_dir / "run.json").write_text(DEEP, encoding="utf-8")
    with pytest.raises(FileAccessError, match="unreadable run metadata"):
        Journal.open(journal.run_dir)
