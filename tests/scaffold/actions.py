"""Just enough of GitHub Actions to run a workflow's shell steps on this machine.

Not a mock of civflow: the world outside (the Actions runner, the `gh` CLI and GitHub's
comment API) is replaced by a runner of `run:` scripts in bash as Actions runs them, an
evaluator of the few `${{ }}` expressions and `if:` conditions the workflow uses, and a
fake `gh` executable that keeps issue comments in a JSON file and filters with real jq.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load_workflow(text: str) -> dict[str, Any]:
    """The workflow as Actions reads it: YAML 1.1's `on` is the key "on", not true."""
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    if True in data:
        data["on"] = data.pop(True)
    return data


def substitute(text: str, context: Mapping[str, str]) -> str:
    """`${{ expr }}` replaced by the context's value; an unknown expression is an error,
    so a new one in the workflow cannot pass unnoticed."""
    def one(match: re.Match[str]) -> str:
        expr = match[1]
        if expr not in context:
            raise KeyError(f"no value for the expression {expr!r}")
        return context[expr]
    return EXPRESSION.sub(one, text)


def condition(text: str | None, context: Mapping[str, str], *, failed: bool = False,
              files: Path | None = None) -> bool:
    """An `if:` of the workflow: ||, &&, !=, ==, parentheses, success(), failure(),
    hashFiles('NAME') and context values."""
    if text is None:
        return not failed
    expr = EXPRESSION.sub(lambda m: m[1], text)
    expr = re.sub(r"hashFiles\('([^']+)'\)",
                  lambda m: repr("h" if files is not None and (files / m[1]).exists() else ""),
                  expr)
    expr = expr.replace("success()", repr(not failed)).replace("failure()", repr(failed))
    for name in sorted(context, key=len, reverse=True):
        expr = expr.replace(name, repr(context[name]))
    expr = expr.replace("||", " or ").replace("&&", " and ")
    assert re.fullmatch(r"[\s()'\"A-Za-z0-9_./:=!-]*", expr), expr
    return bool(eval(expr, {"__builtins__": {}}, {}))  # our own template's text only


def run_script(script: str, *, cwd: Path, env: Mapping[str, str],
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """A `run:` script as Actions runs it: bash -e -o pipefail, no profile."""
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
                          cwd=cwd, env=dict(env), text=True, capture_output=True,
                          timeout=timeout, check=False)


FAKE_GH = r'''
import json, os, re, subprocess, sys
store = os.environ["FAKE_GH_STORE"]
if not os.environ.get("GH_TOKEN"):
    sys.exit("gh: set the GH_TOKEN environment variable")
args = sys.argv[1:]
assert args and args[0] == "api", args
method, jq, fields, url = "GET", None, {}, None
i = 1
while i < len(args):
    a = args[i]
    if a == "--method":
        method, i = args[i + 1], i + 2
    elif a == "--jq":
        jq, i = args[i + 1], i + 2
    elif a == "--paginate":
        i += 1
    elif a in ("-F", "--field", "-f", "--raw-field"):
        key, _, value = args[i + 1].partition("=")
        if a in ("-F", "--field") and value.startswith("@"):
            value = open(value[1:], encoding="utf-8").read()
        fields[key], i = value, i + 2
    else:
        url, i = a, i + 1
state = json.load(open(store)) if os.path.exists(store) else {"comments": [], "calls": []}
state["calls"].append([method, url])
listing = re.fullmatch(r"repos/([^/]+/[^/]+)/issues/(\d+)/comments", url)
single = re.fullmatch(r"repos/([^/]+/[^/]+)/issues/comments/(\d+)", url)
pull = re.fullmatch(r"repos/([^/]+/[^/]+)/pulls/(\d+)", url)
if method == "GET" and pull:
    out = state.get("pulls", {}).get(pull[2])
    if out is None:
        json.dump(state, open(store, "w"))
        sys.exit("gh: Not Found (HTTP 404)")
elif method == "GET" and listing:
    out = [c for c in state["comments"] if c["issue"] == int(listing[2])]
elif method == "POST" and listing:
    # Comments posted with the workflow's token are the Actions bot's, as on GitHub.
    out = {"id": 1000 + len(state["comments"]), "issue": int(listing[2]), "body": fields["body"],
           "user": {"login": "github-actions[bot]"}}
    state["comments"].append(out)
elif method == "PATCH" and single:
    (out,) = [c for c in state["comments"] if c["id"] == int(single[2])]
    out["body"] = fields["body"]
else:
    sys.exit(f"fake gh: no route for {method} {url}")
json.dump(state, open(store, "w"))
text = json.dumps(out)
if jq is not None:
    text = subprocess.run(["jq", "-r", jq], input=text, text=True, capture_output=True,
                          check=True).stdout
sys.stdout.write(text)
'''


def install_fake_gh(folder: Path) -> Path:
    """A `gh` executable in `folder` (put it first on PATH); its state file is returned."""
    folder.mkdir(parents=True, exist_ok=True)
    gh = folder / "gh"
    gh.write_text(f"#!{sys.executable}\n{FAKE_GH}", encoding="utf-8")
    gh.chmod(0o755)
    return folder / "gh-state.json"


def plant_comment(state: Path, issue: int, body: str, login: str) -> int:
    """A comment someone else wrote on the pull request (its author may edit it)."""
    data = json.loads(state.read_text(encoding="utf-8")) if state.exists() else \
        {"comments": [], "calls": []}
    comment = {"id": 1000 + len(data["comments"]), "issue": issue, "body": body,
               "user": {"login": login}}
    data["comments"].append(comment)
    state.write_text(json.dumps(data), encoding="utf-8")
    return int(comment["id"])


def plant_pull(state: Path, number: int, *, head: str, base: str = "main",
               repo: str = "studio/art", open_: bool = True) -> None:
    """A pull request as `gh api repos/R/pulls/N` answers it (`repo`: where its head is)."""
    data = json.loads(state.read_text(encoding="utf-8")) if state.exists() else \
        {"comments": [], "calls": []}
    data.setdefault("pulls", {})[str(number)] = {
        "number": number, "state": "open" if open_ else "closed",
        "head": {"ref": head, "repo": {"full_name": repo}},
        "base": {"ref": base, "repo": {"full_name": "studio/art"}}}
    state.write_text(json.dumps(data), encoding="utf-8")


def comments(state: Path) -> list[dict[str, Any]]:
    data = json.loads(state.read_text(encoding="utf-8")) if state.exists() else {}
    found: list[dict[str, Any]] = data.get("comments", [])
    return found


def calls(state: Path) -> list[list[str]]:
    data = json.loads(state.read_text(encoding="utf-8")) if state.exists() else {}
    found: list[list[str]] = data.get("calls", [])
    return found


def git_in(cwd: Path, *args: str, env: Mapping[str, str]) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, env=dict(env), text=True,
                          capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, f"git {' '.join(args)}\n{done.stdout}{done.stderr}"
    return done.stdout


class StepFailed(AssertionError):
    """A step of a job ended non-zero (with its output)."""


def run_job(job: Mapping[str, Any], workdir: Path, context: dict[str, str],
            env: Mapping[str, str], outputs: list[str], *,
            expect_failure: bool = False) -> list[str]:
    """Each step of a job in order, as the runner would: `uses` steps are what the runner
    does here (checkout and setup-python: already done; upload-artifact: the folder must
    exist), `pip install` is skipped (civflow is installed in this virtualenv), a step's
    `$GITHUB_OUTPUT` becomes `steps.ID.outputs.NAME` in `context`, and a failed step
    skips the rest but those whose `if:` asks for failure(). Returns the names of the
    steps that ran; a failure raises StepFailed unless `expect_failure`."""
    ran: list[str] = []
    failed: str | None = None
    for number, step in enumerate(job["steps"]):
        label = step.get("name") or step.get("uses", "")
        if not condition(step.get("if"), context, failed=failed is not None, files=workdir):
            continue
        if "uses" in step:
            if step["uses"].startswith("actions/upload-artifact"):
                assert (workdir / step["with"]["path"] / "index.html").is_file()
            ran.append(label)
            continue
        if step["run"].startswith("pip install"):
            continue
        out_file = workdir.parent / f".github-output-{number}"
        out_file.write_text("", encoding="utf-8")
        step_env = {**env, "GITHUB_OUTPUT": str(out_file),
                    **{k: substitute(str(v), context) for k, v in step.get("env", {}).items()}}
        done = run_script(substitute(step["run"], context), cwd=workdir, env=step_env)
        outputs.append(done.stdout + done.stderr)
        for line in out_file.read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition("=")
            if "id" in step and name:
                context[f"steps.{step['id']}.outputs.{name}"] = value
        ran.append(label)
        if done.returncode != 0:
            failed = failed or f"step {label!r} failed:\n{done.stdout}{done.stderr}"
    if failed is not None and not expect_failure:
        raise StepFailed(failed)
    if failed is None and expect_failure:
        raise StepFailed("every step succeeded")
    return ran


def base_env(**extra: str) -> dict[str, str]:
    """The environment of a step: this machine's, less civflow's and Civitai's settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CIVITAI_", "CIVFLOW_", "GIT_", "AWS_", "GH_"))}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env.update({"CIVFLOW_EMULATOR_TIME_SCALE": "0", "GIT_AUTHOR_NAME": "dev",
                "GIT_AUTHOR_EMAIL": "dev@example.com", "GIT_COMMITTER_NAME": "dev",
                "GIT_COMMITTER_EMAIL": "dev@example.com"})
    env.update(extra)
    return env
