"""Defaults scoped to an engine or ecosystem, and type defaults that fit another engine."""

from __future__ import annotations

from pathlib import Path

from civflow.loading import load_pipeline

PIPELINE = """\
version: 1
name: scoped
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    model: urn:air:sdxl:checkpoint:civitai:101055@128078
    width: 1024
  imageGen/sdxl:
    operation: createImage
  imageGen/flux1-kontext:
    model: pro
steps:
  shot:
    type: imageGen
    input: {prompt: a teapot}
  edited:
    type: imageGen
    input: {engine: flux1-kontext, prompt: snow, images: [x]}
"""


def test_scoped_defaults_apply_by_engine_and_ecosystem_and_sdxl_fields_stay_off_kontext(
        tmp_path: Path) -> None:
    path = tmp_path / "scoped.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    spec = load_pipeline(path)
    shot, edited = spec.steps["shot"], spec.steps["edited"]
    assert shot.input == {"engine": "sdcpp", "ecosystem": "sdxl", "width": 1024,
                          "model": "urn:air:sdxl:checkpoint:civitai:101055@128078",
                          "operation": "createImage", "prompt": "a teapot"}
    assert edited.input == {"engine": "flux1-kontext", "model": "pro", "prompt": "snow",
                            "images": ["x"]}
    # errors in a defaulted value point at the entry that gave it
    assert spec.input_path("shot", ("operation",)) == ("defaults", "imageGen/sdxl", "operation")
    assert spec.input_path("shot", ("width",)) == ("defaults", "imageGen", "width")
    assert spec.input_path("edited", ("model",)) == ("defaults", "imageGen/flux1-kontext",
                                                     "model")


SETS = """\
version: 1
name: sets
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    model: urn:air:sdxl:checkpoint:civitai:101055@128078
    width: 1024
  sets:
    portrait:
      imageGen:
        width: 832
        height: 1216
    kontext:
      imageGen:
        engine: flux1-kontext
        model: pro
      imageGen/flux1-kontext:
        guidanceScale: 3.5
steps:
  shot:
    type: imageGen
    defaults: portrait
    input: {prompt: a teapot}
  edited:
    type: imageGen
    defaults: [portrait, kontext]
    input: {prompt: snow, images: [x]}
  plain:
    type: imageGen
    input: {prompt: a teapot, width: 512}
"""


def test_a_named_set_applies_only_to_the_steps_that_opt_in_in_their_order(
        tmp_path: Path) -> None:
    path = tmp_path / "sets.yaml"
    path.write_text(SETS, encoding="utf-8")
    spec = load_pipeline(path)
    shot, edited, plain = spec.steps["shot"], spec.steps["edited"], spec.steps["plain"]
    assert shot.default_sets == ("portrait",)
    assert shot.input == {"engine": "sdcpp", "ecosystem": "sdxl", "width": 832, "height": 1216,
                          "model": "urn:air:sdxl:checkpoint:civitai:101055@128078",
                          "prompt": "a teapot"}
    # a set that picks another engine keeps the type's SDXL fields off the step; the
    # engine's entry in the set applies; portrait's size is left to the check (it fits
    # SDXL, not Kontext)
    assert edited.input == {"engine": "flux1-kontext", "model": "pro", "guidanceScale": 3.5,
                            "width": 832, "height": 1216, "prompt": "snow", "images": ["x"]}
    assert plain.input["width"] == 512 and "height" not in plain.input
    assert spec.input_path("shot", ("height",)) == ("defaults", "sets", "portrait", "imageGen",
                                                    "height")
    assert spec.input_path("edited", ("guidanceScale",)) == (
        "defaults", "sets", "kontext", "imageGen/flux1-kontext", "guidanceScale")
    assert spec.input_path("shot", ("model",)) == ("defaults", "imageGen", "model")
