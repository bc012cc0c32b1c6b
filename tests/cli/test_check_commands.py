"""`civflow validate`, `plan`, `render` and `graph` end to end, in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from civflow.cli import main
from tests.openapi_support import require_openapi

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))
GOLDEN = ROOT / "tests" / "golden"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.out, out.err


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A copy of pipelines/ so no lockfile of the checkout leaks into plans."""
    target = tmp_path / "pipelines"
    shutil.copytree(ROOT / "pipelines", target,
                    ignore=shutil.ignore_patterns("*.lock.json"))
    return target


def test_every_example_pipeline_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "validate", *map(str, PIPELINES))
    assert (code, err) == (0, "")
    assert out.count(": ok (") == len(PIPELINES)


def test_validate_reports_every_file_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    broken = GOLDEN / "cycle.yaml"
    code, out, _ = run(capsys, "validate", str(PIPELINES[0]), str(broken))
    assert code == 2
    assert f"{PIPELINES[0]}: ok" in out
    assert f"{broken}:6:3: the steps form a cycle: hero -> upscale -> clip -> hero" in out


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--format", "json",
                       str(GOLDEN / "output-path-typo.yaml"),
                       str(PIPELINES[0]))
    assert code == 2
    bad, good = json.loads(out)
    assert bad["valid"] is False and good["valid"] is True and good["diagnostics"] == []
    (diag,) = bad["diagnostics"]
    assert diag == {"severity": "error", "file": str(GOLDEN / "output-path-typo.yaml"),
                    "line": 19, "col": 14, "hint": "did you mean 'images'?",
                    "message": "steps.hero.output.imagez[0].url does not exist: imageGen "
                               "output has no field 'imagez'"}


def test_validate_github_annotations(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "validate", "--format", "github",
                       str(GOLDEN / "undefined-variable.yaml"))
    assert code == 2
    assert out == (f"::error file={GOLDEN / 'undefined-variable.yaml'},line=13,col=15::"
                   "undefined variable 'subjet' in step 'hero' (hint: did you mean 'subject'?)\n")


def test_missing_file_is_exit_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "validate", str(tmp_path / "nope.yaml"))
    assert code == 4
    assert "no such pipeline file" in out
    code, _, err = run(capsys, "plan", str(tmp_path / "nope.yaml"))
    assert code == 4 and "no such pipeline file" in err


def test_unknown_variable_lists_the_known_ones(capsys: pytest.CaptureFixture[str],
                                              workdir: Path) -> None:
    for command in ("validate", "plan", "render", "graph"):
        code, out, err = run(capsys, command, str(workdir / "hero-shot.yaml"), "--var", "subjet=x")
        assert code == 2, command
        assert "unknown variable 'subjet' (known: seed, style, subject)" in out + err
        assert "did you mean 'subject'?" in out + err
    code, _, err = run(capsys, "plan", str(workdir / "hero-shot.yaml"), "--var", "oops")
    assert code == 2 and "expected NAME=VALUE" in err


def test_vars_file_and_var_override(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    vars_file = workdir / "vars.yaml"
    vars_file.write_text("subject: a paper crane\nseed: 5\n", encoding="utf-8")
    code, out, _ = run(capsys, "render", str(workdir / "hero-shot.yaml"),
                       "--vars-file", str(vars_file), "--var", "seed=9")
    assert code == 0
    hero = json.loads(out)[0]["body"]["steps"][0]["input"]
    assert hero["prompt"].startswith("a paper crane, ")
    assert hero["seed"] == 9


def test_plan_text_json_markdown(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    path = str(workdir / "hero-shot.yaml")
    code, text, _ = run(capsys, "plan", path)
    assert code == 0
    lines = text.splitlines()
    # the fan-out over hero's two images counts as the two instances the run will have
    assert lines[0].startswith("hero-shot: 4 instances, 4 to run (4 new); estimated ")
    assert lines[1].split()[:3] == ["+", "hero", "new"]
    assert "upscale[*]" in lines[2] and "one instance per element of" in lines[2]
    assert "upstream upscale" in lines[3]
    code, raw, _ = run(capsys, "plan", path, "--format", "json")
    data = json.loads(raw)
    assert [i["instance"] for i in data["instances"]] == ["hero", "upscale[*]", "clip"]
    assert data["counts"] == {"new": 3}
    assert data["instances"][0]["fingerprint"].startswith("sha256:")
    assert data["instances"][1]["fanout"] is True
    code, md, _ = run(capsys, "plan", path, "--format", "markdown")
    assert md.startswith("### civflow plan: `hero-shot`\n")
    assert "| + | <code>hero</code> | imageGen | new | not in the lockfile |" in md


def test_plan_only_and_force(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    path = str(workdir / "lora-sweep.yaml")
    # --only selects steps (by step or instance glob) and everything they need.
    code, raw, _ = run(capsys, "plan", path, "--format", "json", "--only", "web[*]")
    assert code == 0
    names = [i["instance"] for i in json.loads(raw)["instances"]]
    assert len(names) == 13 and names[-1] == "web[*]"
    code, raw, _ = run(capsys, "plan", path, "--format", "json", "--only", "sw*")
    assert len(json.loads(raw)["instances"]) == 12
    code, raw, _ = run(capsys, "plan", path, "--format", "json", "--force", "sweep")
    assert {i["decision"] for i in json.loads(raw)["instances"]} == {"forced"}
    code, _, err = run(capsys, "plan", path, "--force", "swep")
    assert code == 2 and "unknown step 'swep' (steps: sweep, web)" in err


def test_render_shows_placeholders_naming_the_reference(capsys: pytest.CaptureFixture[str],
                                                        workdir: Path) -> None:
    code, out, _ = run(capsys, "render", str(workdir / "hero-shot.yaml"), "--batch", "1")
    assert code == 0
    bodies = json.loads(out)
    assert [b["instance"] for b in bodies] == ["hero", "upscale[*]", "clip"]
    hero, upscale, clip = (b["body"] for b in bodies)
    assert hero["steps"][0]["input"]["seed"] == 42  # a lone expression keeps its type
    assert hero["externalId"]  # resolved instances carry their idempotency key
    assert upscale["steps"][0]["input"]["image"] == "<pending: item.url>"
    assert "externalId" not in upscale
    assert clip["steps"][0]["input"]["images"] == [
        "<pending: steps.upscale.outputs[0].blob.url>"]
    assert clip["steps"][0]["timeout"] == "00:20:00"
    assert "notes" not in bodies[0]  # hero sets its own seed


def test_render_shows_the_seed_derived_for_an_unset_seed(
        capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    """An unset seed is a function of the pipeline and instance names, so render shows
    exactly what run sends (and what any other checkout would send)."""
    from civflow.expand import derive_seed

    code, out, _ = run(capsys, "render", str(workdir / "batch-cutout.yaml"))
    assert code == 0
    shots = json.loads(out)[0]
    assert shots["body"]["steps"][0]["input"]["seed"] == derive_seed("batch-cutout",
                                                                     shots["workflow"][0])
    assert "notes" not in shots


@pytest.mark.parametrize("path", PIPELINES, ids=lambda p: p.name)
def test_rendered_bodies_are_accepted_by_the_official_openapi_document(
        capsys: pytest.CaptureFixture[str], workdir: Path, path: Path) -> None:
    openapi = require_openapi()
    code, out, _ = run(capsys, "render", str(workdir / path.name))
    assert code == 0
    bodies: list[dict[str, Any]] = json.loads(out)
    assert bodies
    for item in bodies:
        # A fused input is a `{"$ref", "path"}` the API resolves before the step runs
        # (civitai-api.md, `$ref`); the document types the field as what it becomes.
        body = _refs_resolved(item["body"])
        assert openapi.errors("WorkflowTemplate", body) == [], item["workflow"]


def _refs_resolved(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$ref", "path"}:
            return "https://orchestration.civitai.com/v2/consumer/blobs/ref.png"
        return {k: _refs_resolved(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_refs_resolved(v) for v in value]
    return value


def test_graph_mermaid_and_dot(capsys: pytest.CaptureFixture[str], workdir: Path) -> None:
    code, out, _ = run(capsys, "graph", str(workdir / "hero-shot.yaml"))
    assert code == 0
    assert out == ("flowchart LR\n"
                   '  hero["hero<br/>imageGen"]\n'
                   '  upscale["upscale[*]<br/>imageUpscaler"]\n'
                   '  clip["clip<br/>videoGen"]\n'
                   "  hero --> upscale\n"
                   "  upscale --> clip\n")
    code, out, _ = run(capsys, "graph", str(workdir / "batch-cutout.yaml"), "--format", "dot")
    assert out.startswith('digraph "batch-cutout" {\n')
    assert '  "shots" -> "cutout";\n' in out and '  "shots" -> "variant";\n' in out


def test_invalid_pipeline_in_plan_is_exit_2_without_traceback(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "plan", str(GOLDEN / "engine-sdxl.yaml"))
    assert code == 2
    assert "imageGen has no engine 'sdxl'" in err
    assert "Traceback" not in out + err


_RENDER_AFTER_ENHANCE = """\
version: 1
name: guarded
steps:
  enhance:
    type: promptEnhancement
    input: {{ecosystem: sdxl, prompt: a lighthouse}}
  render:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: urn:air:sdxl:checkpoint:civitai:101055@128078
      prompt: "{{{{ steps.enhance.output.enhancedPrompt }}}}"
      negativePrompt: {negative}
"""


@pytest.mark.parametrize("negative", [
    "\"{{ steps.enhance.output.enhancedNegativePrompt | default('blurry') }}\"",
    "\"{{ steps.enhance.output.enhancedNegativePrompt | d('blurry', true) }}\"",
    "\"{% if steps.enhance.output.enhancedNegativePrompt is defined %}"
    "{{ steps.enhance.output.enhancedNegativePrompt }}{% else %}blurry{% endif %}\"",
])
def test_an_optional_output_field_is_fine_when_guarded(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, negative: str) -> None:
    """Promise (trust item 17): a guarded optional output validates."""
    path = tmp_path / "guarded.yaml"
    path.write_text(_RENDER_AFTER_ENHANCE.format(negative=negative), encoding="utf-8")
    code, out, _ = run(capsys, "validate", str(path))
    assert (code, out) == (0, f"{path}: ok (2 steps)\n")


@pytest.mark.parametrize("negative", [
    "\"{{ steps.enhance.output.enhancedNegativePrompt or 'blurry' }}\"",
    "\"{{ steps.enhance.output.enhancedNegativePrompt }}\"",
])
def test_an_unguarded_optional_output_field_is_an_error_before_anything_is_paid(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, negative: str) -> None:
    """Promise (trust item 17): the reference that failed at run time fails validate, and
    `run` stops before submitting the first step."""
    path = tmp_path / "unguarded.yaml"
    path.write_text(_RENDER_AFTER_ENHANCE.format(negative=negative), encoding="utf-8")
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 2
    assert (f"{path}:15:23: steps.enhance.output.enhancedNegativePrompt may be missing: "
            "promptEnhancement sets 'enhancedNegativePrompt' only sometimes") in out
    code, _, err = run(capsys, "plan", str(path))
    assert code == 2 and "may be missing" in err


_UNKNOWN_ENGINE = """\
version: 1
name: newer
steps:
  hero:
    type: imageGen
{unchecked}    input:
      engine: hidream
      prompt: a fox
"""


def test_unknown_engine_is_an_error_that_names_the_escape(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Promise (issue 13): an unknown engine fails validate (exit 2), even without --strict."""
    path = tmp_path / "newer.yaml"
    path.write_text(_UNKNOWN_ENGINE.format(unchecked=""), encoding="utf-8")
    for extra in ([], ["--strict"]):
        code, out, _ = run(capsys, "validate", *extra, str(path))
        assert code == 2
        assert "step 'hero': imageGen engine 'hidream' is not in civflow's catalog" in out
        assert ("hint: civflow knows engine comfy, fal, flux1-kontext, flux2, gemini, google, "
                "grok, openai, qwen, sdcpp, seedream, wan; if it is newer than civflow, add "
                "'unchecked: true' to the step") in out


def test_unchecked_step_validates_with_a_note_and_plan_can_mark_it(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Promise (issue 13): 'unchecked: true' lets a newer engine through, visibly."""
    from civflow.check import check_pipeline
    from civflow.loading import load_pipeline

    path = tmp_path / "newer.yaml"
    path.write_text(_UNKNOWN_ENGINE.format(unchecked="    unchecked: true\n"), encoding="utf-8")
    code, out, _ = run(capsys, "validate", "--format", "json", str(path))
    assert code == 0
    (result,) = json.loads(out)
    assert result["valid"] is True
    (note,) = result["diagnostics"]
    assert (note["severity"], note["line"], note["col"]) == ("warning", 6, 5)
    assert note["message"] == "step 'hero' is unchecked: its input is sent as written"
    checked = check_pipeline(load_pipeline(path))
    assert checked.spec.steps["hero"].unchecked is True
    assert [w.message for w in checked.warnings] == [note["message"]]


def test_one_run_reports_schema_template_and_catalog_errors_of_every_step(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Promise (issue 13): a schema error in one step hides nothing in another step."""
    path = tmp_path / "mixed.yaml"
    path.write_text("""\
version: 1
name: mixed
steps:
  hero:
    type: imageGen
    retries: many
    input: {engine: sdcpp, prompt: "{{ nope }}"}
  upscale:
    type: imageUpscaler
    input:
      image: "{{ steps.hero.output.images[0].url }}"
      numberOfRepeats: "{{ repeats }}"
      scale: 2
""", encoding="utf-8")
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 2
    located = [line.split(": ", 1)[0] for line in out.splitlines()
               if line.startswith(str(path))]
    assert located == [f"{path}:6:14", f"{path}:12:24", f"{path}:13:7"]


def test_a_guard_or_fan_out_that_raises_fails_validate(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Promise (trust issue, case 11): `{{ 1/0 }}` in `when`/`foreach` is a located error
    at validate, not a crash after the steps before it were paid for; a guard that only
    waits for an upstream output still validates."""
    path = tmp_path / "guards.yaml"
    path.write_text("""\
version: 1
name: guards
steps:
  a:
    type: echo
    input:
      message: hi
  b:
    type: echo
    when: "{{ 1/0 }}"
    input:
      message: "{{ steps.a.output.message }}"
  c:
    type: echo
    foreach: "{{ [1, 2] * 'x' }}"
    input:
      message: "{{ item }}"
  d:
    type: echo
    when: "{{ steps.a.output.message == 'hi' }}"
    input:
      message: ok
""", encoding="utf-8")
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 2
    assert f"{path}:10:11: in step 'b' when: template error: ZeroDivisionError" in out
    assert f"{path}:15:14: in step 'c' foreach: template error: TypeError" in out
    assert "step 'd'" not in out


def test_a_comfy_workflow_file_is_set_by_node_title_and_checked(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Issue 11: a ComfyUI workflow exported in API format, inputs set by node title;
    an unknown title or input is a located error with a did-you-mean, before paying."""
    shutil.copytree(ROOT / "pipelines" / "comfy", tmp_path / "comfy")
    text = (ROOT / "pipelines" / "comfy-portrait.yaml").read_text(encoding="utf-8")
    path = tmp_path / "portrait.yaml"
    path.write_text(text.replace("Sampler: {seed: 7, steps: 20}",
                                 "Samplr: {seed: 7, steps: 20}"), encoding="utf-8")
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 2
    assert f"{path}:20:9: step 'portrait': the workflow has no node titled 'Samplr'" in out
    assert "hint: did you mean 'Sampler'?" in out
    path.write_text(text, encoding="utf-8")
    code, out, _ = run(capsys, "render", str(path))
    assert code == 0
    body = json.loads(out)[0]["body"]["steps"][0]["input"]
    assert body["comfyWorkflow"]["3"]["inputs"]["steps"] == 20
    assert body["comfyWorkflow"]["3"]["inputs"]["model"] == [4, 0]
    assert "workflow" not in body and "set" not in body


def test_prompt_snippets_are_shared_from_the_project_root(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Issue 15: an include not next to the pipeline is looked up at the project's root
    (the folder with .git or .civflow), so pipelines in different folders share
    snippets; a path leaving either folder is still refused."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "snippets").mkdir()
    (tmp_path / "snippets" / "house.j2").write_text("cinematic, 35mm", encoding="utf-8")
    (tmp_path / "team" / "a").mkdir(parents=True)
    path = tmp_path / "team" / "a" / "shot.yaml"
    path.write_text("""\
version: 1
name: shot
steps:
  say:
    type: echo
    input:
      message: "a fox, {% include 'snippets/house.j2' %}"
""", encoding="utf-8")
    code, out, _ = run(capsys, "render", str(path))
    assert code == 0, out
    assert json.loads(out)[0]["body"]["steps"][0]["input"]["message"] == \
        "a fox, cinematic, 35mm"
    path.write_text(path.read_text().replace("snippets/house.j2", "../../../etc/passwd"))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 2 and "outside" in out


def test_plan_shows_invisible_characters_of_names_escaped(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A matrix value with a right-to-left override would display the instance name
    reversed; every format shows it escaped instead."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".civflow").mkdir()
    (tmp_path / "p.yaml").write_text(
        'version: 1\nname: p\nsteps:\n  say:\n    type: echo\n    matrix:\n'
        '      who: ["gpj.\u202eexe"]\n    input:\n      message: "hi {{ matrix.who }}"\n',
        encoding="utf-8")
    for fmt in ("text", "markdown"):
        code, out, err = run(capsys, "plan", "p.yaml", "--format", fmt)
        assert code == 0, err
        assert "\u202e" not in out and "u202e" in out, out


def test_steps_explains_a_type_from_the_catalog(capsys: pytest.CaptureFixture[str]) -> None:
    code, text, _ = run(capsys, "steps", "imageGen/flux1-kontext")
    assert code == 0
    assert "imageGen (engine flux1-kontext, model pro)" in text
    assert "  guidanceScale            number, 1..20, default 3.5" in text
    assert "  prompt                   string, at most 1000 characters, required" in text
    assert "\n  images[].url" in text and "cfgScale" not in text
    code, text, _ = run(capsys, "steps")
    assert code == 0 and text.startswith("imageGen ")
    code, _, err = run(capsys, "steps", "imageGn")
    assert code == 2 and "did you mean 'imageGen'?" in err
