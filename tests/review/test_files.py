"""`plan --base` across files: pipelines added, deleted and renamed, vars files and
includes changed on the base, shallow clones, and paths that must not leave the repo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from civflow.review import compare
from civflow.review.gitbase import open_base
from tests.review.support import MODEL, cli, commit, git, make_repo, write


def small(name: str, prompt: str = "a {{ subject }}", values: str = "[1, 2]") -> str:
    return f"""\
version: 1
name: {name}
vars:
  subject: fox
steps:
  shot:
    type: imageGen
    matrix:
      seed: {values}
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


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def _review(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, root: Path,
            *args: str) -> dict[str, Any]:
    done = cli(capsys, monkeypatch, root, "plan", *args, "--base", "main", "--format", "json")
    assert done.code == 0, done.err
    data: dict[str, Any] = json.loads(done.out)
    return data


def test_added_deleted_and_renamed_pipelines(repo: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a folder of pipelines is compared file by file: a deleted file's
    instances are removed, a new file's added, a renamed file (git mv) is matched with
    its old path and compared instance by instance."""
    write(repo, {"pipelines/keep.yaml": small("keep"), "pipelines/gone.yaml": small("gone"),
                 "pipelines/old-name.yaml": small("moved"),
                 "pipelines/notes.yaml": "just: some yaml\n"})
    commit(repo, "three pipelines")
    git(repo, "checkout", "-q", "-b", "change")
    git(repo, "rm", "-q", "pipelines/gone.yaml")
    git(repo, "mv", "pipelines/old-name.yaml", "pipelines/new-name.yaml")
    fresh = small("fresh", values="[1, 2, 3]").replace(
        "version: 1\n", "version: 1\ndescription: >\n" + "".join(
            f"  a new pipeline, line {i} of its description\n" for i in range(30)))
    write(repo, {"pipelines/fresh.yaml": fresh})
    commit(repo, "delete, rename, add")
    data = _review(capsys, monkeypatch, repo, "pipelines")
    status = {(p["head_path"], p["base_path"]): (p["status"], p["counts"])
              for p in data["pipelines"]}
    two = {"added": 0, "removed": 0, "changed": 0, "unchanged": 2}
    assert status == {
        ("pipelines/keep.yaml", "pipelines/keep.yaml"): ("unchanged", two),
        ("pipelines/new-name.yaml", "pipelines/old-name.yaml"): ("renamed", two),
        ("pipelines/fresh.yaml", None): ("added", {**two, "added": 3, "unchanged": 0}),
        (None, "pipelines/gone.yaml"): ("removed", {**two, "removed": 2, "unchanged": 0}),
    }
    assert data["counts"] == {"added": 3, "removed": 2, "changed": 0, "unchanged": 4}
    md = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--base", "main",
             "--format", "markdown").out
    assert "pipelines/old-name.yaml → pipelines/new-name.yaml | renamed |" in md
    assert "| <code>gone</code> | pipelines/gone.yaml | removed | 0 | 0 | 2 | 0 |" in md
    # A deleted file named on the command line is a removed pipeline, not "no such file".
    data = _review(capsys, monkeypatch, repo, "pipelines/gone.yaml")
    assert [p["status"] for p in data["pipelines"]] == ["removed"]
    # A caller that names head files alone (the report) gets those files alone.
    review = compare([], "main", cwd=repo, head_files=[repo / "pipelines/new-name.yaml"])
    assert [(p.head_path, p.base_path, p.status) for p in review.pipelines] == [
        ("pipelines/new-name.yaml", "pipelines/old-name.yaml", "renamed")]


def test_a_vars_file_changed_on_the_base(repo: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: --vars-file is read as of the base on the base side, so a change to the
    vars file alone shows as field changes (old value → new value)."""
    write(repo, {"pipelines/a.yaml": small("a"), "vars/prod.yaml": "subject: owl\n"})
    commit(repo, "prod vars")
    write(repo, {"vars/prod.yaml": "subject: red fox\n"})
    data = _review(capsys, monkeypatch, repo, "pipelines/a.yaml", "--vars-file",
                   "vars/prod.yaml")
    (pipeline,) = data["pipelines"]
    assert pipeline["counts"]["changed"] == 2
    assert pipeline["instances"][0]["fields"] == [
        {"path": "prompt", "kind": "changed", "old": "a owl", "new": "a red fox"}]
    # A vars file the base does not have: the base uses this tree's copy, and says so.
    write(repo, {"vars/new.yaml": "subject: hare\n"})
    data = _review(capsys, monkeypatch, repo, "pipelines/a.yaml", "--vars-file",
                   "vars/new.yaml")
    assert data["counts"]["changed"] == 0
    assert any("vars/new.yaml is not in main" in n for n in data["notes"])


def test_an_include_changed_on_the_base(repo: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: templates a pipeline includes are read as of the base too."""
    write(repo, {"pipelines/a.yaml": small("a", prompt="{% include 'prompts/p.j2' %}"),
                 "pipelines/prompts/p.j2": "a fox in the snow"})
    commit(repo, "include")
    write(repo, {"pipelines/prompts/p.j2": "a fox in the rain"})
    data = _review(capsys, monkeypatch, repo, "pipelines")
    fields = data["pipelines"][0]["instances"][0]["fields"]
    assert fields == [{"path": "prompt", "kind": "changed", "old": "a fox in the snow",
                       "new": "a fox in the rain"}]


def test_shallow_clone_without_the_base_says_how_to_fetch(
        repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: in a shallow CI clone that lacks the base, plan --base exits 2 with a
    hint naming `git fetch --depth` and `fetch-depth: 0`, and no traceback."""
    write(repo, {"pipelines/a.yaml": small("a")})
    commit(repo, "one")
    git(repo, "checkout", "-q", "-b", "feature")
    write(repo, {"pipelines/a.yaml": small("a", prompt="a red {{ subject }}")})
    commit(repo, "two")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--depth=1", "--branch", "feature",
                    f"file://{repo}", str(clone)], check=True, capture_output=True,
                   env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    done = cli(capsys, monkeypatch, clone, "plan", "pipelines", "--base", "main")
    assert done.code == 2
    assert "Traceback" not in done.err
    assert "error: --base main: no such commit in" in done.err
    assert "git fetch --depth=50 origin main" in done.err and "fetch-depth: 0" in done.err
    # Fetched as the hint says, the same command works.
    git(clone, "fetch", "-q", "--depth=50", "origin", "main:refs/remotes/origin/main")
    done = cli(capsys, monkeypatch, clone, "plan", "pipelines", "--base", "origin/main")
    assert done.code == 0, done.err
    assert "2 changed" in done.out


def test_paths_outside_the_repository_are_refused(
        repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: a path outside the repository (directly or through a symlink) is a
    usage error; nothing outside is planned or read."""
    write(repo, {"pipelines/a.yaml": small("a")})
    commit(repo, "one")
    outside = tmp_path / "outside.yaml"
    outside.write_text(small("outside"), encoding="utf-8")
    (repo / "pipelines" / "link.yaml").symlink_to(outside)
    for path in (str(outside), "../outside.yaml", "pipelines/link.yaml"):
        done = cli(capsys, monkeypatch, repo, "plan", path, "--base", "main")
        assert done.code == 2, (path, done.err)
        assert "outside the git repository" in done.err
        assert "Traceback" not in done.err
    done = cli(capsys, monkeypatch, repo, "plan", "pipelines/nope.yaml", "--base", "main")
    assert done.code == 4 and "no such pipeline file" in done.err


def test_a_symlink_in_the_base_tree_is_never_followed(
        repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Promise: the base tree is untrusted: an include that is a symlink in git (here to
    a file outside the repository) is not copied or read; the base is compared as
    unplannable, with a note, instead."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET", encoding="utf-8")
    write(repo, {"pipelines/a.yaml": small("a", prompt="{% include 'p.j2' %}")})
    (repo / "pipelines" / "p.j2").symlink_to(secret)
    commit(repo, "a link")
    (repo / "pipelines" / "p.j2").unlink()
    write(repo, {"pipelines/p.j2": "a fox"})
    done = cli(capsys, monkeypatch, repo, "plan", "pipelines", "--base", "main",
               "--format", "json")
    assert done.code == 0, done.err
    assert "TOP-SECRET" not in done.out
    (pipeline,) = json.loads(done.out)["pipelines"]
    assert pipeline["counts"]["added"] == 2
    assert "could not be planned" in pipeline["notes"][0]
    assert "main:pipelines/a.yaml" in pipeline["notes"][0]


def test_base_ref_must_be_a_commit(repo: Path) -> None:
    """Promise: a ref that looks like an option is refused, not passed to git."""
    write(repo, {"pipelines/a.yaml": small("a")})
    commit(repo, "one")
    from civflow.errors import UsageError

    for ref in ("--output=/tmp/x", "", "main\nx"):
        with pytest.raises(UsageError):
            open_base(ref, repo)
    assert open_base("main", repo).commit == git(repo, "rev-parse", "main").strip()
    review = compare([Path("pipelines")], "HEAD", cwd=repo)
    assert [p.status for p in review.pipelines] == ["unchanged"]
