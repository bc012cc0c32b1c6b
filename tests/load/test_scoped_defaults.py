"""Defaults scoped to an engine or ecosystem, and type defaults that fit another engine."""

from __future__ import annotations

from pathlib import Path

from civflow.load import load_pipeline

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
