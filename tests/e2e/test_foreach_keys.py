"""Names that survive editing: a foreach instance is its item, not its position."""

from __future__ import annotations

from civflow.emulator import RunningEmulator
from tests.e2e.support import MODEL, Project, created

PRODUCTS = f"""\
version: 1
name: catalog
vars:
  products:
PRODUCTS_HERE
steps:
  shot:
    type: imageGen
    foreach: "{{{{ products }}}}"
    key: "{{{{ item.sku }}}}"
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "product photo of {{{{ item.name }}}}"
      width: 256
      height: 256
      steps: 10
  alt:
    type: echo
    foreach: "{{{{ products | map(attribute='name') | list }}}}"
    input:
      message: "{{{{ item }}}}"
"""


def _write(project: Project, *skus: str) -> None:
    lines = "".join(f"    - {{sku: {s}, name: a {s}}}\n" for s in skus)
    project.write("catalog", PRODUCTS.replace("PRODUCTS_HERE", lines.rstrip("\n")))


def test_reordering_or_adding_items_reruns_nothing_else(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: never paid twice. Adding a product at the top used to re-run (and re-pay)
    every product after it, because instances were named by position."""
    project, emulator = ready
    _write(project, "mug", "cap", "tee")
    assert project.run("catalog").code == 0
    assert created(emulator) == 6
    lock = project.lock("catalog")["instances"]
    assert {"shot[mug]", "shot[cap]", "shot[tee]", "alt[a mug]"} <= set(lock)

    _write(project, "tee", "mug", "cap")  # reordered
    again = project.run("catalog")
    assert again.code == 0 and "6 cached" in again.err, again.text
    assert created(emulator) == 6

    _write(project, "hat", "tee", "mug", "cap")  # one new product at the top
    shown = project.cli("plan", "pipelines/catalog.yaml")
    assert "+ shot[hat]" in shown.out and "shot[mug]" in shown.out
    more = project.run("catalog")
    assert more.code == 0 and "2 succeeded" in more.err and "6 cached" in more.err, more.text
    assert created(emulator) == 8


def test_a_full_run_prunes_instances_that_are_gone_unless_asked_to_keep(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, _emulator = ready
    _write(project, "mug", "cap")
    assert project.run("catalog").code == 0
    _write(project, "mug")
    assert project.run("catalog", "--keep-stale").code == 0
    assert "shot[cap]" in project.lock("catalog")["instances"]
    assert project.run("catalog").code == 0
    assert set(project.lock("catalog")["instances"]) == {"shot[mug]", "alt[a mug]"}


def test_a_bad_key_is_a_located_error_before_anything_is_paid(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    _write(project, "mug", "cap")
    path = project.root / "pipelines" / "catalog.yaml"
    path.write_text(path.read_text().replace("{{ item.sku }}", "{{ item }}"))
    outcome = project.cli("validate", "pipelines/catalog.yaml")
    assert outcome.code == 2 and "key gives dict, not a string" in outcome.out, outcome.text
    assert "pipelines/catalog.yaml:11:10" in outcome.out
    assert created(emulator) == 0


SCENES = f"""\
version: 1
name: scenes
steps:
  shot:
    type: imageGen
    key: "{{{{ matrix.scene.split()[0] }}}}-s{{{{ matrix.seed }}}}"
    matrix:
      scene: ["front/back view of a tall house at dusk", "side view of a boat"]
      seed: [1, 2]
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "{{{{ matrix.scene }}}}"
      seed: "{{{{ matrix.seed }}}}"
      width: 256
      height: 256
      steps: 10
"""


def test_a_matrix_key_names_instances_and_folders_short_and_globs_use_it(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Names survive editing: a sweep over whole scene texts names its instances (and
    folders) by a short key the author chose, not by every value spelled out."""
    project, emulator = ready
    project.write("scenes", SCENES)
    first = project.run("scenes", "--only", "shot[front/back-*]")
    assert first.code == 0, first.text
    assert set(project.lock("scenes")["instances"]) == {"shot[front/back-s1]",
                                                        "shot[front/back-s2]"}
    assert created(emulator) == 2
    assert project.run("scenes").code == 0 and created(emulator) == 4
    # One folder per instance, none nested by the '/' of a key.
    folders = sorted(p.name for p in (project.root / "out" / "scenes").iterdir())
    assert len(folders) == 4 and all((project.root / "out" / "scenes" / f / "0.jpeg").is_file()
                                     for f in folders), folders
    assert folders[2:] == ["shot[side-s1]", "shot[side-s2]"], folders
    assert all(f.startswith("shot[front_back-s") for f in folders[:2]), folders

    # A prompt edit keeps the names (and the seeds derived from them).
    path = project.root / "pipelines" / "scenes.yaml"
    path.write_text(path.read_text().replace("at dusk", "at dawn"))
    shown = project.cli("plan", "pipelines/scenes.yaml")
    assert "~ shot[front/back-s1]" in shown.out and "= shot[side-s1]" in shown.out, shown.text


def test_a_matrix_key_that_cannot_tell_combinations_apart_is_refused(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    project.write("scenes", SCENES.replace("-s{{ matrix.seed }}", ""))
    outcome = project.cli("validate", "pipelines/scenes.yaml")
    assert outcome.code == 2, outcome.text
    assert "key gives 'front/back' for both" in outcome.out and "seed=1" in outcome.out
    assert "pipelines/scenes.yaml:6:10" in outcome.out
    assert created(emulator) == 0


def test_a_key_on_a_single_step_is_a_located_error(ready: tuple[Project, RunningEmulator]) -> None:
    project, _emulator = ready
    single = SCENES.replace("    matrix:\n", "    unused:\n").replace("    unused:\n", "", 1)
    single = "\n".join(line for line in single.splitlines()
                       if not line.startswith(("      scene:", "      seed: [")))
    project.write("scenes", single.replace("{{ matrix.scene }}", "a").replace(
        "\"{{ matrix.seed }}\"", "1").replace("{{ matrix.scene.split()[0] }}-s{{ matrix.seed }}",
                                               "x"))
    outcome = project.cli("validate", "pipelines/scenes.yaml")
    assert outcome.code == 2, outcome.text
    assert "pipelines/scenes.yaml:6:5: step 'shot' has a 'key' but neither 'foreach' nor " \
           "'matrix'" in outcome.out, outcome.text
