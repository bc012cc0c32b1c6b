"""plan(): every instance in dependency order with its decision and the reasons for it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from civflow.check import Checked, check_pipeline
from civflow.check.render import content_key
from civflow.errors import UsageError
from civflow.expand import Context, StepResults, derive_seed, fingerprint
from civflow.loading import load_pipeline
from civflow.planning import (
    Decision,
    Plan,
    PlanOptions,
    Prior,
    changed_fields,
    glob_match,
    plan,
)
from civflow.producers import Producers
from civflow.request import tokenize_output, workflow_body

PIPELINE = """\
version: 1
name: demo
vars:
  subject: a red fox
  crop: true
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: urn:air:sdxl:checkpoint:civitai:101055@128078
    width: 1024
    height: 1024
steps:
  hero:
    type: imageGen
    input:
      prompt: "{{ subject }}"
      seed: 7
  sweep:
    type: imageGen
    matrix:
      strength: [0.5, 1.0]
      sampler: [euler, heun]
    input:
      prompt: "{{ subject }}, {{ matrix.sampler }}"
      seed: 1
  upscale:
    type: imageUpscaler
    foreach: "{{ steps.hero.output.images }}"
    input:
      image: "{{ item.url }}"
      numberOfRepeats: 1
  cutout:
    type: imageBackgroundRemoval
    when: "{{ crop }}"
    input:
      image: "{{ steps.hero.output.images[0].url }}"
  after:
    type: imageUpscaler
    input:
      image: "{{ steps.cutout.output.image.url }}"
      numberOfRepeats: 1
"""

HERO_OUTPUT = {"images": [{"id": "blob-1", "url": "https://x/1?sig=a", "available": True},
                          {"id": "blob-2", "url": "https://x/2?sig=b", "available": True}]}


def _checked(tmp_path: Path, text: str = PIPELINE, **overrides: Any) -> Checked:
    path = tmp_path / "demo.yaml"
    path.write_text(text, encoding="utf-8")
    return check_pipeline(load_pipeline(path, overrides))


def _by_name(result: Plan) -> dict[str, Any]:
    return {p.name: p for p in result.instances}


def _prior_of(result: Plan, name: str, output: dict[str, Any] | None = None,
              **changes: Any) -> Prior:
    inst = _by_name(result)[name].instance
    assert inst.fingerprint is not None
    return Prior(fingerprint=inst.fingerprint, request=inst.request, output=output or {},
                 **changes)


def test_first_plan_is_all_new_in_dependency_order(tmp_path: Path) -> None:
    result = plan(_checked(tmp_path))
    names = [p.name for p in result.instances]
    assert names == [
        "hero",
        "sweep[strength=0.5,sampler=euler]", "sweep[strength=0.5,sampler=heun]",
        "sweep[strength=1.0,sampler=euler]", "sweep[strength=1.0,sampler=heun]",
        "upscale[*]", "cutout", "after",
    ]
    by = _by_name(result)
    assert by["hero"].decision is Decision.NEW
    assert by["hero"].reasons == ("not in the lockfile",)
    assert by["sweep[strength=1.0,sampler=heun]"].instance.input["prompt"] == "a red fox, heun"
    assert by["sweep[strength=1.0,sampler=heun]"].instance.matrix == {"strength": 1.0,
                                                                     "sampler": "heun"}
    fan = by["upscale[*]"]
    assert fan.instance.fanout and fan.decision is Decision.NEW
    assert fan.reasons == ("one instance per element of {{ steps.hero.output.images }}, "
                           "known at run time",)
    assert by["cutout"].reasons == ("upstream hero", "not in the lockfile")
    assert result.counts() == {"new": 8}
    assert result.estimate > 0


def test_matching_fingerprint_is_cached_and_its_output_feeds_downstream(tmp_path: Path
                                                                         ) -> None:
    checked = _checked(tmp_path)
    first = plan(checked)
    output = tokenize_output(HERO_OUTPUT, {"blob-1": "aa", "blob-2": "bb"})
    priors = {"hero": _prior_of(first, "hero", output)}
    by = _by_name(plan(checked, priors))
    assert by["hero"].decision is Decision.CACHED
    assert by["hero"].reasons == ("fingerprint matches the lockfile",)
    assert by["hero"].estimate == 0.0
    # With hero's output known, the fan-out expands to one instance per image.
    first_up, second_up = [p for p in by.values() if p.instance.step == "upscale"]
    assert first_up.instance.input["image"] == "civflow-blob:sha256:aa"
    assert second_up.instance.index == 1
    # A foreach instance is named by its item's content, not its position.
    assert first_up.name == f"upscale[{content_key(output['images'][0])}]"
    assert "upscale[*]" not in by
    assert by["cutout"].instance.input["image"] == "civflow-blob:sha256:aa"
    assert by["cutout"].decision is Decision.NEW


def test_changed_lists_the_fields_that_changed(tmp_path: Path) -> None:
    first = plan(_checked(tmp_path))
    priors = {"hero": _prior_of(first, "hero", HERO_OUTPUT)}
    by = _by_name(plan(_checked(tmp_path, subject="an owl"), priors))
    assert by["hero"].decision is Decision.CHANGED
    assert by["hero"].reasons == ("input.prompt",)
    # A step downstream of one that runs is changed because of it, once it has a prior.
    priors["cutout"] = Prior(fingerprint="sha256:old", request={}, output={})
    by = _by_name(plan(_checked(tmp_path, subject="an owl"), priors))
    assert by["cutout"].decision is Decision.CHANGED
    assert by["cutout"].reasons == ("upstream hero",)
    # So is a fan-out whose earlier instances are in the lockfile.
    priors["upscale[1a2b3c4d5e]"] = Prior(fingerprint="sha256:old", request={}, output={})
    fan = _by_name(plan(_checked(tmp_path, subject="an owl"), priors))["upscale[*]"]
    assert fan.decision is Decision.CHANGED
    assert fan.reasons == ("upstream hero", "one instance per element of "
                           "{{ steps.hero.output.images }}, known at run time")


def test_options_change_and_missing_artifacts_are_restored_not_repaid(tmp_path: Path) -> None:
    checked = _checked(tmp_path)
    first = plan(checked)
    prior = _prior_of(first, "hero", HERO_OUTPUT)
    old_request = {**prior.request, "options": {"timeout": "00:01:00"}}
    moved = Prior(fingerprint=fingerprint(old_request), request=old_request, output={})
    assert _by_name(plan(checked, {"hero": moved}))["hero"].reasons == ("options.timeout",)
    gone = _prior_of(first, "hero", HERO_OUTPUT, artifacts_ok=False, damaged=2)
    planned = _by_name(plan(checked, {"hero": gone}))["hero"]
    # Paid for already: the files come back from the store or by blob id.
    assert planned.decision is Decision.CACHED and planned.estimate == 0.0
    assert planned.reasons[1].startswith("2 file(s) missing from out/: restored")
    # Files only Civitai has: cached while it has them, lost (priced) once it has not.
    only_there = replace(gone, lost=("blob-a",))
    planned = _by_name(plan(checked, {"hero": only_there}))["hero"]
    assert planned.decision is Decision.CACHED and planned.estimate == 0.0
    assert "only at Civitai" in planned.reasons[-1]
    lost = _by_name(plan(checked, {"hero": only_there}, gone=frozenset({"blob-a"})))["hero"]
    assert lost.decision is Decision.LOST and lost.decision.runs
    assert lost.estimate is not None and lost.estimate > 0


def test_forced_step_and_its_dependents(tmp_path: Path) -> None:
    checked = _checked(tmp_path)
    first = plan(checked)
    priors = {name: _prior_of(first, name, HERO_OUTPUT if name == "hero" else {})
              for name in ("hero", "sweep[strength=0.5,sampler=euler]")}
    by = _by_name(plan(checked, priors, PlanOptions(force=frozenset({"hero"}))))
    assert by["hero"].decision is Decision.FORCED and by["hero"].reasons == ("--force",)
    assert by["cutout"].decision is Decision.FORCED
    assert by["sweep[strength=0.5,sampler=euler]"].decision is Decision.CACHED
    everything = plan(checked, priors, PlanOptions(force=frozenset({"*"})))
    assert {p.decision for p in everything.instances} == {Decision.FORCED}


def test_when_false_skips_the_step_and_what_needs_it(tmp_path: Path) -> None:
    by = _by_name(plan(_checked(tmp_path, crop=False)))
    assert by["cutout"].decision is Decision.SKIPPED
    assert by["cutout"].reasons == ("when: {{ crop }} is false",)
    assert by["after"].decision is Decision.SKIPPED
    assert by["after"].reasons == ("upstream cutout is skipped",)
    assert by["cutout"].estimate is None


def test_when_on_an_unknown_output_is_decided_at_run_time(tmp_path: Path) -> None:
    text = PIPELINE.replace('when: "{{ crop }}"',
                            'when: "{{ steps.hero.output.images | length > 1 }}"')
    by = _by_name(plan(_checked(tmp_path, text)))
    assert by["cutout"].decision is Decision.NEW
    assert by["cutout"].reasons[-1] == "when is evaluated at run time"


@pytest.mark.parametrize("only,expected", [
    (("hero",), ["hero"]),
    (("cutout",), ["hero", "cutout"]),
    (("sweep[*]",), ["sweep[strength=0.5,sampler=euler]", "sweep[strength=0.5,sampler=heun]",
                     "sweep[strength=1.0,sampler=euler]", "sweep[strength=1.0,sampler=heun]"]),
    (("upscale[*]",), ["hero", "upscale[*]"]),
    (("aft*",), ["hero", "cutout", "after"]),
    # Instance globs filter a matrix step instance by instance (issue: names that work).
    (("sweep[*sampler=heun]",), ["sweep[strength=0.5,sampler=heun]",
                                 "sweep[strength=1.0,sampler=heun]"]),
])
def test_only_globs_select_steps_and_what_they_need(tmp_path: Path, only: tuple[str, ...],
                                                    expected: list[str]) -> None:
    result = plan(_checked(tmp_path), options=PlanOptions(only=only))
    assert [p.name for p in result.instances] == expected


def test_only_glob_matching_nothing_is_a_usage_error(tmp_path: Path) -> None:
    """Guards CI: a typo in --only fails instead of reporting "nothing to do"."""
    with pytest.raises(UsageError, match="matches no step or instance") as caught:
        plan(_checked(tmp_path), options=PlanOptions(only=("upscal",)))
    assert caught.value.hint == "did you mean 'upscale'?"


def test_glob_match_treats_brackets_literally() -> None:
    assert glob_match("upscale[3]", "upscale[*]")
    assert glob_match("sweep[strength=0.5,sampler=euler]", "sweep[strength=0.5*]")
    assert not glob_match("upscale", "upscale[*]")
    assert glob_match("hero", "h?ro")


def test_unset_seeds_derive_from_identity_then_reroll_salts_them(tmp_path: Path) -> None:
    """Guards "never paid twice": two runs anywhere send the same seed, so the same
    body and externalId; a prompt edit keeps the seed; --reroll salts it, recorded."""
    text = PIPELINE.replace("      seed: 7\n", "")
    checked = _checked(tmp_path, text)
    hero = _by_name(plan(checked))["hero"]
    assert hero.instance.input["seed"] == derive_seed("demo", "hero") == hero.instance.seed
    assert hero.instance.resolved and hero.instance.reroll == 0
    edited = _by_name(plan(_checked(tmp_path, text.replace("{{ subject }}\"", "x\""))))
    assert edited["hero"].instance.seed == hero.instance.seed
    # A seed recorded in the lockfile (an older civflow drew them at random) is kept.
    seeded_input = {**hero.instance.input, "seed": 1234}
    request = {**hero.instance.request, "input": seeded_input}
    prior = Prior(fingerprint=fingerprint(request), request=request, output=HERO_OUTPUT,
                  seed=1234)
    again = _by_name(plan(checked, {"hero": prior}))["hero"]
    assert again.instance.input["seed"] == 1234 and again.instance.seed == 1234
    assert again.decision is Decision.CACHED
    rerolled = _by_name(plan(checked, {"hero": prior},
                             PlanOptions(reroll=frozenset({"hero"}))))["hero"]
    assert rerolled.decision is Decision.FORCED
    assert rerolled.reasons == ("--reroll draws a new seed",)
    assert rerolled.instance.reroll == 1
    assert rerolled.instance.seed == derive_seed("demo", "hero", 1) != 1234
    salted = Prior(fingerprint="sha256:x", request=request, output=HERO_OUTPUT, seed=5,
                   reroll=1)
    twice = _by_name(plan(checked, {"hero": salted},
                          PlanOptions(reroll=frozenset({"hero"}))))["hero"]
    assert twice.instance.reroll == 2 and twice.instance.seed == derive_seed("demo", "hero", 2)


def test_changed_fields_paths() -> None:
    old = {"type": "imageGen", "input": {"prompt": "a", "loras": {"x": 1}}, "options": {}}
    new = {"type": "imageGen", "input": {"prompt": "b", "loras": {"x": 1, "y": 2},
                                         "steps": 3}, "options": {}}
    assert changed_fields(old, new) == ["input.loras.y", "input.prompt", "input.steps"]
    assert changed_fields({"a": [1]}, {"a": [2]}) == ["a"]


def test_changed_fields_name_the_upstream_instance_whose_output_changed() -> None:
    """A field that holds an upstream output is named by the instance that made it,
    first; the fields edited here follow as paths."""
    old_token, new_token = "civflow-blob:sha256:" + "a" * 64, "civflow-blob:sha256:" + "b" * 64
    made = Producers([("shot[mug-marble]", {"images": [{"id": "b", "url": new_token}]})])
    old = {"type": "imageUpscaler", "input": {"image": old_token, "numberOfRepeats": 1}}
    new = {"type": "imageUpscaler", "input": {"image": new_token, "numberOfRepeats": 2}}
    assert changed_fields(old, new, made) == ["upstream shot[mug-marble] changed",
                                              "input.numberOfRepeats"]
    assert changed_fields(old, new) == ["input.image", "input.numberOfRepeats"]


def test_tokenize_output_replaces_urls_with_content_tokens() -> None:
    out = tokenize_output({"images": [{"id": "b1", "url": "https://x?sig", "urlExpiresAt": "t",
                                       "width": 8}], "blob": {"id": "zz", "url": "u"}},
                          {"b1": "ab"})
    assert out == {"images": [{"id": "b1", "url": "civflow-blob:sha256:ab", "width": 8}],
                   "blob": {"id": "zz"}}


def test_context_exposes_known_outputs(tmp_path: Path) -> None:
    checked = _checked(tmp_path)
    context = Context(checked.spec, "r1")
    context.learn("hero", StepResults(({"images": []},)))
    context.learn("sweep", StepResults(({"images": [1, 2]}, {"images": [3]}),
                                       names=("sweep[x=1]", "sweep[x=2]"),
                                       matrices=({"x": 1}, {"x": 2})))
    steps = context.values["steps"]
    hero = {"key": "hero", "name": "hero", "matrix": {}, "output": {"images": []}}
    assert steps["hero"] == {"output": {"images": []}, "outputs": [{"images": []}],
                             "instances": [hero], "images": []}
    one, two = {"images": [1, 2]}, {"images": [3]}
    assert steps["sweep"] == {
        "x=1": one, "x=2": two, "outputs": [one, two],
        "instances": [{"key": "x=1", "name": "sweep[x=1]", "matrix": {"x": 1}, "output": one},
                      {"key": "x=2", "name": "sweep[x=2]", "matrix": {"x": 2}, "output": two}],
        # several images of one instance are keyed by position, one image by the instance
        "images": [{"key": "x=1-0", "name": "sweep[x=1]", "matrix": {"x": 1}, "image": 1},
                   {"key": "x=1-1", "name": "sweep[x=1]", "matrix": {"x": 1}, "image": 2},
                   {"key": "x=2", "name": "sweep[x=2]", "matrix": {"x": 2}, "image": 3}]}
    assert steps["sweep"][{"x": 2}] == two
    assert str(steps["cutout"]["x=3"]) == "<pending: steps.cutout['x=3']>"
    assert str(steps["cutout"]["output"]) == "<pending: steps.cutout.output>"
    assert context.values["run"] == {"id": "r1"}
    assert context.values["pipeline"] == {"name": "demo"}


def test_workflow_body(tmp_path: Path) -> None:
    checked = _checked(tmp_path, PIPELINE.replace("steps:\n  hero:", "workflow:\n  tags: [t1]\n"
                                                  "  priority: high\n  nsfwLevel: pg\n"
                                                  "steps:\n  hero:", 1))
    result = plan(checked)
    by = _by_name(result)
    body = workflow_body(checked.spec, by["cutout"].instance, run_id="r9", external_id="e1")
    assert body["steps"] == [{"$type": "imageBackgroundRemoval", "name": "cutout",
                              "input": {"image": "<pending: steps.hero.output.images[0].url>"},
                              "priority": "high"}]
    assert body["tags"] == ["t1", "civflow:demo", "civflow-run:r9"]
    assert body["metadata"] == {"civflow": {"pipeline": "demo", "instance": "cutout"}}
    assert body["externalId"] == "e1" and body["nsfwLevel"] == "pg"
    assert body["currencies"] == []
