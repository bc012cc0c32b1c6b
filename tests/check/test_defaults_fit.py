"""Shared defaults apply where they fit: a type-wide field the step's input shape does not
take is left out for that step; a scoped entry's misfit and a field no shape takes are
errors at the default's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from civflow.check import check_file
from civflow.errors import PipelineInvalid

PIPELINE = """\
version: 1
name: fit
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: urn:air:sdxl:checkpoint:civitai:101055@128078
    cfgScale: 7
  sets:
    portrait:
      imageGen:
        width: 832
        height: 1216
        aspectRatio: "2:3"
steps:
  shot:
    type: imageGen
    defaults: portrait
    input: {prompt: a lighthouse keeper}
  edited:
    type: imageGen
    defaults: portrait
    input:
      engine: flux1-kontext
      model: pro
      prompt: give him a scarf
      images: ["{{ steps.shot.output.images[0].url }}"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fit.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_shared_default_is_not_forced_onto_a_shape_that_does_not_take_it(
        tmp_path: Path) -> None:
    checked = check_file(_write(tmp_path, PIPELINE))
    shot, edited = checked.spec.steps["shot"], checked.spec.steps["edited"]
    assert shot.input["width"] == 832 and "aspectRatio" not in shot.input
    assert edited.input["aspectRatio"] == "2:3"
    assert not {"width", "height", "cfgScale"} & set(edited.input)
    assert ("width",) not in edited.defaulted and ("aspectRatio",) in edited.defaulted


def test_a_shared_default_no_shape_takes_is_an_error_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(PipelineInvalid) as info:
        check_file(_write(tmp_path, PIPELINE.replace("cfgScale: 7", "cfgScal: 7")))
    shown = [d.render() for d in info.value.diagnostics]
    assert shown and all(text.startswith(f"{tmp_path / 'fit.yaml'}:9:5: step '")
                         for text in shown), shown
    assert "'cfgScal' is not a field of imageGen (engine sdcpp, ecosystem sdxl)" in shown[0]


def test_a_step_that_opts_into_an_undefined_set_is_told_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(PipelineInvalid) as info:
        check_file(_write(tmp_path, PIPELINE.replace("defaults: portrait\n    input: {",
                                                     "defaults: [portrit]\n    input: {")))
    (only,) = info.value.diagnostics
    assert only.message == "step 'shot' opts into the default set 'portrit', which is not defined"
    assert only.hint == "did you mean 'portrait'?"
    assert only.location is not None and only.location.line == 19
