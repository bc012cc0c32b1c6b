"""The `civflow-validate` pre-commit hook works, as shipped and as `civflow init` writes it.

Promises guarded here:
- this repository's `.pre-commit-hooks.yaml` installs civflow with pre-commit itself
  (`pre-commit try-repo`, language python: needs PyPI, as CI has) and its hook passes a
  good pipeline and fails a bad one with a located error (file:line:col), looking only at
  pipeline files;
- the local hook in the `.pre-commit-config.yaml` that `civflow init` writes does the same
  with the civflow already installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.scaffold.actions import base_env

pytest.importorskip("pre_commit", reason="the dev extra installs pre-commit")

ROOT = Path(__file__).resolve().parents[2]
GOOD = (ROOT / "pipelines" / "hero-shot.yaml").read_text(encoding="utf-8")
BAD = """version: 1
name: bad
steps:
  hero:
    type: imageGenn
    input: {prompt: a fox}
"""


def _repo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True, timeout=60,
                   env=base_env())
    (folder / "pipelines").mkdir()
    (folder / "pipelines" / "good.yaml").write_text(GOOD, encoding="utf-8")
    (folder / "pipelines" / "bad.yaml").write_text(BAD, encoding="utf-8")
    (folder / "notes.yaml").write_text("not: a pipeline\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=folder, check=True, timeout=60, env=base_env())
    return folder


def _pre_commit(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pre_commit", *args], cwd=cwd,
                          env=base_env(PRE_COMMIT_HOME=str(home)), text=True,
                          capture_output=True, timeout=900, check=False)


@pytest.mark.registry  # pre-commit installs the hook's repository with pip
@pytest.mark.timeout(1200)
def test_shipped_hook_with_pre_commit_try_repo(tmp_path: Path) -> None:
    """`pre-commit try-repo <this repository> civflow-validate` at the committed HEAD:
    the good pipeline passes, the bad one fails with its location; notes.yaml (not under
    pipelines/) is not looked at."""
    repo = _repo(tmp_path / "project")
    home = tmp_path / "pre-commit-home"
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, text=True,
                          capture_output=True, timeout=60, check=True).stdout.strip()
    common = ("try-repo", str(ROOT), "civflow-validate", "--ref", head)
    good = _pre_commit(*common, "--files", "pipelines/good.yaml", "notes.yaml", cwd=repo,
                       home=home)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "civflow validate" in good.stdout and "Passed" in good.stdout
    bad = _pre_commit(*common, "--all-files", cwd=repo, home=home)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "pipelines/bad.yaml:5:11:" in bad.stdout, bad.stdout
    assert "imageGenn" in bad.stdout and "Traceback" not in bad.stdout
    assert "notes.yaml" not in bad.stdout


def test_init_written_config(tmp_path: Path) -> None:
    """The local hook `civflow init` configures runs the installed civflow on pipelines."""
    project = tmp_path / "project"
    done = subprocess.run([sys.executable, "-m", "civflow", "init", str(project),
                           "--no-hooks"], env=base_env(), text=True, capture_output=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (project / "pipelines" / "bad.yaml").write_text(BAD, encoding="utf-8")
    (project / "notes.yaml").write_text("not: a pipeline\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, timeout=60, env=base_env())
    home = tmp_path / "pre-commit-home"
    bad = _pre_commit("run", "--all-files", cwd=project, home=home)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "pipelines/bad.yaml:5:11:" in bad.stdout, bad.stdout
    (project / "pipelines" / "bad.yaml").unlink()
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, timeout=60, env=base_env())
    good = _pre_commit("run", "--all-files", cwd=project, home=home)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Passed" in good.stdout


def test_the_hook_sees_what_a_pipeline_reads(tmp_path: Path) -> None:
    """Issue 23: breaking an included prompt template committed fine (the hook looked at
    pipeline files only), and the error pointed at the include line. Now a change to the
    template runs the hook, and the error is located inside the template."""
    project = tmp_path / "project"
    done = subprocess.run([sys.executable, "-m", "civflow", "init", str(project),
                           "--no-hooks"], env=base_env(), text=True, capture_output=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (project / "prompts").mkdir()
    prompt = project / "prompts" / "product.j2"
    prompt.write_text("a {{ subject }} on marble\n", encoding="utf-8")
    (project / "pipelines" / "product.yaml").write_text(
        "version: 1\nname: product\nvars:\n  subject: teapot\nsteps:\n  say:\n    type: echo\n"
        "    input:\n      message: \"{% include 'prompts/product.j2' %}\"\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, timeout=60, env=base_env())
    home = tmp_path / "pre-commit-home"
    good = _pre_commit("run", "--files", "prompts/product.j2", cwd=project, home=home)
    assert good.returncode == 0 and "Passed" in good.stdout, good.stdout + good.stderr
    prompt.write_text("a {{ subject } on marble\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=project, check=True, timeout=60, env=base_env())
    bad = _pre_commit("run", "--files", "prompts/product.j2", cwd=project, home=home)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "prompts/product.j2:1:1: template syntax error" in bad.stdout, bad.stdout
    assert "included from pipelines/product.yaml:9:" in bad.stdout
