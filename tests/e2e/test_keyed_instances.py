"""Results addressed by name: `steps.<name>["KEY"]`, `.instances`, per-instance `when`."""

from __future__ import annotations

from civflow.emulator import RunningEmulator
from tests.e2e.support import MODEL, REPO, Project, created

SHOTS = f"""\
version: 1
name: shots
vars:
  approved: [mug-marble, cap-linen]
steps:
  shot:
    type: imageGen
    matrix:
      product: [PRODUCTS]
      bg: [marble, linen]
    key: "{{{{ matrix.product }}}}-{{{{ matrix.bg }}}}"
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: "a {{{{ matrix.product }}}} on {{{{ matrix.bg }}}}"
      width: 256
      height: 256
      steps: 10
  hero:
    type: echo
    input:
      message: "{{{{ steps.shot['mug-marble'].images[0].id }}}}"
  hires:
    type: echo
    foreach: "{{{{ steps.shot.instances | selectattr('key', 'in', approved) | list }}}}"
    input:
      message: "{{{{ item.matrix.product }}}} {{{{ item.output.images[0].id }}}}"
  linen:
    type: echo
    matrix:
      product: [PRODUCTS]
    when: "{{{{ matrix.product != 'tee' }}}}"
    input:
      message: "{{{{ steps.shot[matrix.product ~ '-linen'].images[0].id }}}}"
"""


def _write(project: Project, products: str) -> None:
    project.write("shots", SHOTS.replace("PRODUCTS", products))


def test_keyed_access_names_fanouts_by_upstream_key_and_survives_reordering(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    _write(project, "mug, cap, tee")
    assert project.cli("validate", "pipelines/shots.yaml").code == 0
    first = project.run("shots")
    assert first.code == 0, first.text
    lock = project.lock("shots")["instances"]
    assert {"hires[mug-marble]", "hires[cap-linen]", "linen[product=mug]",
            "linen[product=cap]"} <= set(lock)
    assert "linen[product=tee]" not in lock  # its own `when` was false
    hero = lock["hero"]
    mug = lock["shot[mug-marble]"]
    assert str(mug["output"]["images"][0]["id"]) in str(hero["output"])
    paid = created(emulator)

    _write(project, "tee, cap, mug")  # reordering an axis changes nothing downstream
    again = project.run("shots")
    assert again.code == 0 and "11 cached" in again.err, again.text
    assert created(emulator) == paid
    assert project.lock("shots")["instances"]["hero"] == hero



def test_plan_names_and_counts_the_instances_a_keyed_foreach_will_have(
        ready: tuple[Project, RunningEmulator]) -> None:
    """Promise: plan and run read one decision; the plan used to say 6 and the run did 9."""
    project, _emulator = ready
    _write(project, "mug, cap, tee")
    shown = project.cli("plan", "pipelines/shots.yaml")
    assert "shots: 11 instances, 11 to run" in shown.out, shown.out
    assert "+ hires[mug-marble]" in shown.out and "+ hires[cap-linen]" in shown.out
    assert "linen[product=tee]" not in shown.out
    run = project.run("shots")
    assert run.code == 0 and ": 11 succeeded;" in run.err, run.text


FANOUT = f"""\
version: 1
name: fan
steps:
  pics:
    type: imageGen
    input:
      engine: sdcpp
      ecosystem: sdxl
      operation: createImage
      model: {MODEL}
      prompt: a lighthouse
      width: 256
      height: 256
      steps: 10
      quantity: 3
  each:
    type: echo
    foreach: "{{{{ steps.pics.output.images }}}}"
    input:
      message: "{{{{ item.id }}}}"
  later:
    type: echo
    foreach: "{{{{ steps.each.outputs }}}}"
    input:
      message: "n{{{{ index }}}}"
"""


def test_plan_counts_a_fanout_the_upstream_quantity_fixes_and_says_which_it_cannot(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, _emulator = ready
    project.write("fan", FANOUT)
    shown = project.cli("plan", "pipelines/fan.yaml")
    assert "fan: 4 known + 1 fan-out sized at run time, 4 to run" in shown.out, shown.out
    run = project.run("fan")
    assert run.code == 0 and ": 7 succeeded;" in run.err, run.text


def test_a_matrix_axis_from_a_variable_is_keyed_and_reordered_for_free(
        ready: tuple[Project, RunningEmulator]) -> None:
    project, emulator = ready
    text = SHOTS.replace("product: [PRODUCTS]", 'product: "{{ product_order }}"')
    project.write("shots", text.replace("vars:\n", "vars:\n  product_order: [mug, cap, tee]\n"))
    first = project.run("shots")
    assert first.code == 0 and ": 11 succeeded;" in first.err, first.text
    paid = created(emulator)
    project.write("shots", text.replace("vars:\n", "vars:\n  product_order: [tee, mug, cap]\n"))
    again = project.run("shots")
    assert again.code == 0 and "11 cached" in again.err, again.text
    assert created(emulator) == paid
    less = project.run("shots", "--var", "product_order=[mug]", "-v")
    assert less.code == 0 and "shot[mug-linen]: cached" in less.err, less.text
    assert "shot[cap-linen]" not in less.err and created(emulator) == paid


def test_the_shipped_product_matrix_reordered_pays_nothing(
        ready: tuple[Project, RunningEmulator]) -> None:
    """The journey that paid 12 Buzz for the wrong upscales: reordering both axes of the
    shipped example now renames, re-runs and pays nothing."""
    project, emulator = ready
    text = (REPO / "pipelines" / "product-matrix.yaml").read_text(encoding="utf-8")
    project.write("product-matrix", text)
    first = project.run("product-matrix")
    assert first.code == 0 and ": 21 succeeded;" in first.err, first.text
    assert {"hires[mug-marble]", "hires[vase-linen]", "hires[lamp-walnut]"} <= set(
        project.lock("product-matrix")["instances"])
    paid = created(emulator)
    reordered = text.replace("[mug, teapot, vase, bowl, candle, lamp]",
                             "[lamp, bowl, mug, candle, vase, teapot]").replace(
        "[marble, linen, walnut]", "[walnut, marble, linen]")
    assert reordered != text
    project.write("product-matrix", reordered)
    again = project.run("product-matrix")
    assert again.code == 0 and "21 cached" in again.err, again.text
    assert created(emulator) == paid
