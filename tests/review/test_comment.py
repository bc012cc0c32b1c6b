"""The PR comment of `plan --base --format markdown`: bounded at any size, says what
it left out, and renders untrusted text (prompts, matrix values) inert."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from civflow.review.comment import MARKER, MAX_COMMENT, escape, markdown
from civflow.review.diff import compare, reading_order
from tests.review.support import MODEL, cli, commit, git, make_repo, write

WORDS = ["misty", "golden", "quiet", "ancient", "neon", "frozen", "velvet", "distant"]


def _big(prompt: str) -> str:
    """5,000 instances: 100 subjects x 50 seeds, prompts about 300 characters long."""
    rng = random.Random(9)
    subjects = [f"{rng.choice(WORDS)}-{i:03d}" for i in range(100)]
    return f"""\
version: 1
name: big
steps:
  shot:
    type: imageGen
    matrix:
      subject: [{", ".join(subjects)}]
      seed: [{", ".join(str(s) for s in range(1, 51))}]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "{prompt}"
      seed: "{{{{ matrix.seed }}}}"
      width: 64
      height: 64
"""


LONG = ("a {{ matrix.subject }} creature in a WEATHER landscape, " + "highly detailed, " * 14
        + "seed {{ matrix.seed }}")


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_repo(tmp_path_factory.mktemp("big") / "repo")
    write(root, {"pipelines/big.yaml": _big(LONG.replace("WEATHER", "snowy"))})
    commit(root, "5,000 instances")
    git(root, "checkout", "-q", "-b", "change")
    write(root, {"pipelines/big.yaml": _big(LONG.replace("WEATHER", "rainy"))})
    return root


@pytest.fixture(scope="module")
def big_outputs(big: Path) -> tuple[str, str]:
    """(markdown, json) of the 5,000-instance change, planned once."""
    review = compare(["pipelines"], "main", cwd=big)
    from civflow.review.comment import review_json

    return markdown(review), review_json(review)


def test_five_thousand_changes_fit_and_say_what_was_left_out(
        big_outputs: tuple[str, str]) -> None:
    """Promise: a 5,000-instance change gives a comment under 60,000 characters that
    opens with the sticky marker, sums up every instance, collapses details by step,
    and says how many instances it did not list and where the full plan is."""
    md, _ = big_outputs
    assert len(md) < MAX_COMMENT
    assert md.splitlines()[0] == MARKER and md.count(MARKER) == 1
    assert "5000 changed, 0 added, 0 removed, 0 unchanged" in md
    assert md.count("<details>") == md.count("</details>") >= 1
    listed = len(re.findall(r"^\| ~ \| <code>", md, re.MULTILINE))
    assert 0 < listed < 5000
    assert f"**Truncated:** {5000 - listed:,} of 5,000 changed instances are not listed" in md
    assert "<code>civflow plan pipelines --base main --format json</code>" in md
    # The step's one edit is summed up in one line, whatever was cut.
    assert "<code>prompt</code>: &quot;…snowy…&quot; → &quot;…rainy…&quot; ×5,000" in md


def test_json_keeps_every_instance_and_whole_values(big_outputs: tuple[str, str]) -> None:
    """Promise: the JSON is not bounded like the comment: every instance, whole values."""
    md, raw = big_outputs
    data = json.loads(raw)
    instances = data["pipelines"][0]["instances"]
    assert len(instances) == 5000
    (field,) = instances[0]["fields"]
    assert field["path"] == "prompt" and len(field["new"]) > 250
    assert "rainy landscape, highly detailed" in field["new"]
    # In the comment the same value is cut around the edit.
    assert field["new"] not in md


def test_untrusted_text_is_inert(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: prompts and matrix values cannot inject HTML, links, mentions or table
    cells into the PR comment; each detail row keeps its five cells."""
    hostile = ("<img src=x onerror=alert(1)> @octocat | [click](javascript:alert(1)) "
               "`tick` **bold** <!-- x --> </details> #1 :tada:")
    root = make_repo(tmp_path / "repo")
    text = _big("a fox").replace(
        "      subject: [", "      subject: ['<b>|x</b>', '@team', ").replace(
        "[" + ", ".join(str(s) for s in range(1, 51)) + "]", "[1]")
    write(root, {"pipelines/p.yaml": text})
    commit(root, "plain")
    write(root, {"pipelines/p.yaml": text.replace('"a fox"', json.dumps(hostile))})
    done = cli(capsys, monkeypatch, root, "plan", "pipelines", "--base", "main",
               "--format", "markdown")
    assert done.code == 0, done.err
    md = done.out
    for bad in ("<img", "<b>|", "@octocat", "@team", "](javascript", "<!-- x", "`tick`",
                "**bold**", "</details> #1"):
        assert bad not in md, bad
    rows = [line for line in md.splitlines() if line.startswith("| ~ |")]
    assert len(rows) == 102
    assert all(line.count("|") == 6 for line in rows)
    assert md.count("<details>") == md.count("</details>")
    assert escape("a|b\n@c") == "a&#124;b &#64;c"


def test_many_pipelines_keep_the_table_and_the_comment_bounded(tmp_path: Path) -> None:
    """Promise: a change to 60 pipelines lists 40 in the summary table, sums up the
    rest in one row, keeps the total, and stays within the limit it is given."""
    root = make_repo(tmp_path / "repo")
    one = _big("a fox").split("matrix:")[0] + (
        "matrix:\n      seed: [1, 2]\n    input:" + _big("a fox").split("    input:")[1])
    files = {f"pipelines/p{i:02d}.yaml": one.replace("name: big", f"name: p{i:02d}")
             for i in range(60)}
    write(root, files)
    commit(root, "60 pipelines")
    write(root, {k: v.replace('"a fox"', '"a red fox"') for k, v in files.items()})
    review = compare(["pipelines"], "main", cwd=root)
    assert review.counts()["changed"] == 60 * 2
    md = markdown(review, limit=12_000)
    assert len(md) <= 12_000
    assert "| … 20 more | | | 40 | 0 | 0 | 0 |" in md
    assert "| **total** | | | 120 | 0 | 0 | 0 |" in md
    assert md.count("<details>") == md.count("</details>")
    assert "**Truncated:**" in md and "and " in md.split("**Truncated:**")[1]


def test_the_table_lists_changed_pipelines_first(tmp_path: Path) -> None:
    """Promise: the summary table reads as a reviewer works: changed pipelines, then
    added, removed and unchanged ones, each group in path order (as the report)."""
    root = make_repo(tmp_path / "repo")

    def echo(name: str, message: str = "hi") -> str:
        return (f"version: 1\nname: {name}\nsteps:\n  say:\n    type: echo\n"
                f"    input: {{message: {message}}}\n")
    write(root, {"pipelines/a-still.yaml": echo("still"), "pipelines/c-edit.yaml": echo("edit"),
                 "pipelines/d-gone.yaml": echo("gone"), "pipelines/e-edit.yaml": echo("more")})
    commit(root, "four pipelines")
    (root / "pipelines" / "d-gone.yaml").unlink()
    write(root, {"pipelines/b-new.yaml": echo("new"),
                 "pipelines/c-edit.yaml": echo("edit", "hello"),
                 "pipelines/e-edit.yaml": echo("more", "hello")})
    review = compare(["pipelines"], "main", cwd=root)
    rows = [line.split(" | ")[0].removeprefix("| <code>").removesuffix("</code>")
            for line in markdown(review).splitlines() if line.startswith("| <code>")]
    assert rows == ["edit", "more", "new", "gone", "still"]
    assert [p.name for p in reading_order(review.pipelines)] == rows
