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
