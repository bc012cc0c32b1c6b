"""`civflow init` starts a repository that works, and never overwrites a file.

Promises guarded here:
- in a plain folder: a git repository with an example pipeline that validates and runs on
  the emulator, whose `yaml-language-server` modeline names .civflow/editor-schema.json,
  a link (ignored, never committed) to the installed civflow's editor schema, which
  validates the pipeline; what init leaves for git to commit is a few KB, not the 1.2 MB
  schema; every file init wrote is named in its output; .gitignore holds .civflow/, out/
  and report/, no merge driver (.gitattributes) is needed, and the workflow and
  pre-commit config are in place;
- in an existing repository: .gitignore is appended to, never
  duplicated; from a subfolder the workflow and pre-commit config go to the top, pointing
  into the subfolder;
- an existing file is never overwritten: exit 2 naming every such file, nothing written;
- `--hooks` installs a post-checkout hook with which a branch switch restores out/ to the
  checked-out lockfile's bytes from the store, submitting nothing; without a terminal
  and without `--hooks`, no hook.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from civflow.scaffold import editor_schema_path, editor_schema_text
from tests.cli_in_process import run_cli
from tests.scaffold.actions import base_env
from tests.stand_in import run_paid

PIPELINE = Path("pipelines/hello.yaml")


def civflow(*args: str | Path, cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`civflow ARGS` as a child with a step's environment and no stdin would run it,
    in-process; the hooks git runs are processes of their own, as on a laptop."""
    return run_cli(*args, cwd=cwd, env=base_env(**extra))


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=base_env(), text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_init_in_a_plain_folder(tmp_path: Path) -> None:
    """A working starter repository from nothing."""
    done = civflow("init", "studio", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    repo = tmp_path / "studio"
    assert git(repo, "rev-parse", "--show-toplevel").strip() == str(repo.resolve())
    # The modeline names .civflow/editor-schema.json, relative to the pipeline: a link
    # to the schema of the civflow installed here.
    first = (repo / PIPELINE).read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# yaml-language-server: \$schema=(\S+)", first)
    assert match, first
    schema_file = (repo / PIPELINE).parent / match[1]
    assert schema_file.parent.resolve() == (repo / ".civflow").resolve()
    assert schema_file.is_symlink() and schema_file.resolve() == editor_schema_path()
    assert schema_file.read_text(encoding="utf-8") == editor_schema_text()
    data = yaml.safe_load((repo / PIPELINE).read_text(encoding="utf-8"))
    assert list(Draft7Validator(json.loads(schema_file.read_text("utf-8"))).iter_errors(data)) \
        == []
    # Ignored and wired; lockfiles need no merge driver (plain git merges them).
    assert (repo / ".gitignore").read_text(encoding="utf-8").splitlines() == [
        ".civflow/", "out/", "report/"]
    assert not (repo / ".gitattributes").exists()
    assert "merge.civflow" not in git(repo, "config", "--list")
    assert (repo / ".github/workflows/civflow.yml").is_file()
    assert (repo / ".pre-commit-config.yaml").is_file()
    assert not (repo / ".git/hooks/post-checkout").exists()  # no terminal, no --hooks
    assert git(repo, "check-ignore", ".civflow/x", "out/x").split() == [".civflow/x", "out/x"]
    # Every file init wrote is named in its output; what git would commit is small.
    written = [p for p in repo.rglob("*") if (p.is_file() or p.is_symlink())
               and p.relative_to(repo).parts[0] != ".git"]
    assert len(written) == 5, written
    for path in written:
        assert f"studio/{path.relative_to(repo).as_posix()}" in done.stdout, done.stdout
    committed = git(repo, "status", "--porcelain", "--untracked-files=all").split()[1::2]
    assert sorted(committed) == [".github/workflows/civflow.yml", ".gitignore",
                                 ".pre-commit-config.yaml", "pipelines/hello.yaml"]
    assert sum((repo / name).stat().st_size for name in committed) < 20_000
    # The example validates and runs.
    done = civflow("validate", PIPELINE, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    done = civflow("run", "--emulator", PIPELINE, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(list((repo / "out" / "hello").rglob("*.webp"))) == 2


def test_init_in_an_existing_repository_appends_without_duplicating(tmp_path: Path) -> None:
    """An existing .gitignore keeps its lines; only what is missing is added ('/out'
    counts as 'out/'). .gitattributes is left alone."""
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("node_modules\n/out", encoding="utf-8")
    (tmp_path / ".gitattributes").write_text("*.png binary\n", encoding="utf-8")
    done = civflow("init", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / ".gitignore").read_text(encoding="utf-8") == \
        "node_modules\n/out\n.civflow/\nreport/\n"
    assert (tmp_path / ".gitattributes").read_text(encoding="utf-8") == "*.png binary\n"
    assert "initialised a git repository" not in done.stdout


def test_init_in_a_subfolder_puts_ci_files_at_the_top(tmp_path: Path) -> None:
    """GitHub and pre-commit read their files at the repository's top: they go there and
    point into the project's folder."""
    git(tmp_path, "init", "-q")
    done = civflow("init", "art/gen", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "art/gen" / PIPELINE).is_file()
    assert (tmp_path / "art/gen/.civflow/editor-schema.json").resolve() == editor_schema_path()
    first = (tmp_path / "art/gen" / PIPELINE).read_text(encoding="utf-8").splitlines()[0]
    assert first == "# yaml-language-server: $schema=../.civflow/editor-schema.json"
    flow = yaml.safe_load((tmp_path / ".github/workflows/civflow.yml").read_text("utf-8"))
    assert flow["env"]["PIPELINES"] == "art/gen/pipelines"
    hooks = yaml.safe_load((tmp_path / ".pre-commit-config.yaml").read_text("utf-8"))
    hook = hooks["repos"][0]["hooks"][0]
    # Any file of the project a pipeline may read (prompts, vars), not the outputs.
    assert hook["entry"] == "civflow validate 'art/gen/pipelines'"
    assert re.search(hook["files"], "art/gen/pipelines/hello.yaml")
    assert re.search(hook["files"], "art/gen/prompts/product.j2")
    assert not re.search(hook["files"], "pipelines/hello.yaml")
    assert re.search(hook["exclude"], "art/gen/out/hello/0.webp")
    assert not (tmp_path / "art/gen/.github").exists()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    """Every file init would create that exists is named; exit 2; nothing is written."""
    git(tmp_path, "init", "-q")
    (tmp_path / ".pre-commit-config.yaml").write_text("repos: []\n", encoding="utf-8")
    (tmp_path / "pipelines").mkdir()
    (tmp_path / PIPELINE).write_text("mine\n", encoding="utf-8")
    done = civflow("init", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: refusing to overwrite ")
    assert ".pre-commit-config.yaml" in done.stderr and "pipelines/hello.yaml" in done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / PIPELINE).read_text(encoding="utf-8") == "mine\n"
    assert (tmp_path / ".pre-commit-config.yaml").read_text(encoding="utf-8") == "repos: []\n"
    assert not (tmp_path / ".civflow").exists()
    assert not (tmp_path / ".github").exists() and not (tmp_path / ".gitignore").exists()
    # Twice in a row in a plain folder: the second refuses, naming all three files.
    again = tmp_path.parent / f"{tmp_path.name}-again"
    done = civflow("init", again, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = civflow("init", again, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].count(", ") == 2, done.stderr


def test_post_checkout_hook_restores_out_after_a_branch_switch(tmp_path: Path) -> None:
    """With --hooks, switching branches makes out/ match the checked-out lockfile, from
    the store, submitting nothing."""
    repo = tmp_path / "studio"
    done = civflow("init", repo, "--hooks", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    hook = repo / ".git" / "hooks" / "post-checkout"
    assert hook.is_file() and os.access(hook, os.X_OK)
    picture = repo / "out" / "hello" / "picture[seed=11]" / "0.jpeg"
    git(repo, "checkout", "-q", "-b", "main")
    # Paid work (a stand-in for the real API): what a branch's committed lockfile holds.
    run_paid(repo, PIPELINE)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "lighthouse")
    lighthouse = picture.read_bytes()
    git(repo, "checkout", "-q", "-b", "fox")
    pipeline = repo / PIPELINE
    pipeline.write_text(pipeline.read_text("utf-8").replace("a lighthouse on a cliff",
                                                             "a red fox on a cliff"), "utf-8")
    run_paid(repo, PIPELINE)
    git(repo, "commit", "-q", "-am", "fox")
    fox = picture.read_bytes()
    assert fox != lighthouse
    # The hook runs civflow from PATH, as a developer's shell would.
    env = base_env()
    switched = subprocess.run(["git", "checkout", "-q", "main"], cwd=repo, env=env, text=True,
                              capture_output=True, timeout=300, check=False)
    assert switched.returncode == 0, switched.stderr
    assert picture.read_bytes() == lighthouse, switched.stderr
    subprocess.run(["git", "checkout", "-q", "fox"], cwd=repo, env=env, timeout=300,
                   check=True, capture_output=True)
    assert picture.read_bytes() == fox
    # Nothing was submitted: a plan of main is all cached.
    git(repo, "checkout", "-q", "main")
    plan = civflow("plan", PIPELINE, "--format", "json", cwd=repo)
    assert set(json.loads(plan.stdout)["counts"]) == {"cached"}, plan.stdout


def _on_a_terminal(args: list[str], cwd: Path, answer: bytes) -> tuple[int, str]:
    """Run civflow with a pseudo-terminal as stdin and stdout; answer its one question."""
    main, secondary = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "civflow", *args], cwd=cwd,
                               env=base_env(), stdin=secondary, stdout=secondary,
                               stderr=secondary, close_fds=True)
    os.close(secondary)
    seen = b""
    answered = False
    try:
        for _ in range(2000):  # bounded: each read waits at most 0.1 s
            ready, _, _ = select.select([main], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            if not answered and b"[Y/n]" in seen:
                os.write(main, answer)
                answered = True
            if process.poll() is not None and not ready:
                break
        code = process.wait(timeout=120)
    finally:
        os.close(main)
        if process.poll() is None:
            process.kill()
    return code, seen.decode("utf-8", "replace")


def test_init_asks_about_the_hook_on_a_terminal(tmp_path: Path) -> None:
    """On a terminal, init asks whether to install the hook; 'n' leaves it out, Enter
    (the default yes) puts it in."""
    code, out = _on_a_terminal(["init", "no-hook"], tmp_path, b"n\n")
    assert code == 0, out
    assert "post-checkout hook" in out
    assert not (tmp_path / "no-hook/.git/hooks/post-checkout").exists()
    code, out = _on_a_terminal(["init", "hook"], tmp_path, b"\n")
    assert code == 0, out
    assert (tmp_path / "hook/.git/hooks/post-checkout").is_file()


def test_hook_goes_where_git_runs_hooks(tmp_path: Path) -> None:
    """With core.hooksPath set, the hook is written there (git would not run it from
    .git/hooks); an existing hook there is never overwritten."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "core.hooksPath", ".githooks")
    done = civflow("init", "--hooks", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.access(tmp_path / ".githooks" / "post-checkout", os.X_OK)
    assert not (tmp_path / ".git" / "hooks" / "post-checkout").exists()
    done = civflow("init", "again", "--hooks", cwd=tmp_path)
    assert done.returncode == 2
    assert ".githooks/post-checkout" in done.stderr


def test_a_fresh_clone_needs_one_idempotent_civflow_install(tmp_path: Path) -> None:
    """Issue 23: `init --hooks` refused in a clone (its files exist). `civflow install`
    sets the clone up (the hook, and the editor schema its pipelines' modelines name),
    twice is harmless, and a branch switch then restores out/."""
    repo = tmp_path / "studio"
    assert civflow("init", repo, "--no-hooks", cwd=tmp_path).returncode == 0
    git(repo, "checkout", "-q", "-b", "main")
    run_paid(repo, str(PIPELINE))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "lighthouse")
    pipeline = repo / PIPELINE
    git(repo, "checkout", "-q", "-b", "fox")
    pipeline.write_text(pipeline.read_text("utf-8").replace("a lighthouse on a cliff",
                                                             "a red fox on a cliff"), "utf-8")
    run_paid(repo, str(PIPELINE))
    git(repo, "commit", "-q", "-am", "fox")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "-b", "fox", str(repo), str(clone))
    assert not (clone / ".civflow").exists()  # nothing of the schema is committed
    first = civflow("install", cwd=clone)
    assert first.returncode == 0 and "installed" in first.stdout, first.stdout + first.stderr
    assert "linked .civflow/editor-schema.json" in first.stdout
    assert (clone / ".civflow" / "editor-schema.json").resolve() == editor_schema_path()
    again = civflow("install", cwd=clone)
    assert again.returncode == 0 and "already installed" in again.stdout
    assert "already linked" in again.stdout
    # checkout restores from the local store (or the team's remote): give the clone the
    # store the runs filled, as on the machine that ran them.
    picture = clone / "out" / "hello" / "picture[seed=11]" / "0.jpeg"
    (repo / ".civflow" / "objects").rename(clone / ".civflow" / "objects")
    assert civflow("checkout", cwd=clone).returncode == 0
    fox = picture.read_bytes()
    switched = subprocess.run(["git", "checkout", "-q", "main"], cwd=clone, env=base_env(),
                              text=True, capture_output=True, timeout=300, check=False)
    assert switched.returncode == 0, switched.stderr
    assert picture.read_bytes() != fox  # the lighthouse, restored by the hook
    tip = civflow("checkout", cwd=clone)
    assert "civflow install" not in tip.stderr  # installed: no tip


def _in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                cwd: Path, *args: str) -> str:
    from civflow.cli import main

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main([*args])
    assert stop.value.code in (0, None), capsys.readouterr()
    return capsys.readouterr().out


def test_the_schema_link_is_mended_or_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A link left by a civflow installed elsewhere is pointed at this one by `civflow
    install`; where the file system makes no links, the schema is copied instead."""
    repo = tmp_path / "studio"
    git(tmp_path, "init", "-q", str(repo))
    schema = repo / ".civflow" / "editor-schema.json"
    schema.parent.mkdir()
    schema.symlink_to(tmp_path / "old-venv" / "editor.schema.json")
    out = _in_process(monkeypatch, capsys, repo, "install")
    assert "linked .civflow/editor-schema.json" in out
    assert schema.resolve() == editor_schema_path()

    def no_links(self: Path, target: object, target_is_directory: bool = False) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(Path, "symlink_to", no_links)
    out = _in_process(monkeypatch, capsys, tmp_path, "init", "copied", "--no-hooks")
    copy = tmp_path / "copied" / ".civflow" / "editor-schema.json"
    assert "a copy of this civflow's editor schema" in out
    assert not copy.is_symlink() and copy.read_text(encoding="utf-8") == editor_schema_text()
