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
  picked:
    type: echo
    foreach: "{{{{ steps.each.outputs | selectattr('message') | list }}}}"
    input:
      message: "p{{{{ index }}}}"
"""


def test_plan_counts_a_fanout_the_upstream_quantity_fixes_and_says_which_it_cannot(
        ready: tuple[Project, RunningEmulator]) -> None:
    """A fan-out over a fan-out's outputs has its size; a filtered list only the run
    can size, and the plan says so instead of counting it as one."""
    project, _emulator = ready
    project.write("fan", FANOUT)
    shown = project.cli("plan", "pipelines/fan.yaml")
    assert "fan: 7 known + 1 fan-out sized at run time, 7 to run" in shown.out, shown.out
    run = project.run("fan")
    assert run.code == 0 and ": 10 succeeded;" in run.err, run.text


TURN = f"""\
version: 1
name: turn
vars:
  angles: [front, left, back]
defaults:
  imageGen:
    engine: sdcpp
    ecosystem: sdxl
    operation: createImage
    model: {MODEL}
    width: 256
    height: 256
    steps: 10
steps:
  turn:
    type: imageGen
    matrix:
      angle: "{{{{ angles }}}}"
    key: "{{{{ matrix.angle }}}}"
    input:
      prompt: "an explorer, {{{{ matrix.angle }}}} view"
      quantity: 2
  dressed:
    type: echo
    foreach: "{{{{ steps.turn.images }}}}"
    input:
      message: "{{{{ item.matrix.angle }}}} {{{{ item.image.id }}}}"
  sketch:
    type: imageGen
    matrix:
      angle: "{{{{ angles }}}}"
    key: "{{{{ matrix.angle }}}}"
    input:
      prompt: "a pencil sketch, {{{{ matrix.angle }}}} view"
  inked:
    type: echo
    foreach: "{{{{ steps.sketch.images }}}}"
    input:
      message: "{{{{ item.image.id }}}}"
  per_turn:
    type: echo
    foreach: "{{{{ steps.turn.outputs }}}}"
    input:
      message: "{{{{ item.images | length }}}} images"
"""


def test_a_fanout_over_several_images_per_instance_is_named_by_key_and_position(
        ready: tuple[Project, RunningEmulator]) -> None:
    """dressed[front-0], dressed[front-1]: which picture of which shot, not a hash; one
    image per instance stays inked[front]. Plan names and counts them all before the run;
    reordering the axis renames, re-runs and pays nothing."""
    project, emulator = ready
    project.write("turn", TURN)
    shown = project.cli("plan", "pipelines/turn.yaml")
    assert "turn: 18 instances, 18 to run" in shown.out, shown.out
    assert "+ dressed[front-0]" in shown.out and "+ dressed[back-1]" in shown.out
    assert "+ inked[left]" in shown.out, shown.out
    first = project.run("turn")
    assert first.code == 0 and ": 18 succeeded;" in first.err, first.text
    lock = project.lock("turn")["instances"]
    assert {f"dressed[{a}-{i}]" for a in ("front", "left", "back") for i in (0, 1)} <= set(lock)
    assert {"inked[front]", "inked[left]", "inked[back]"} <= set(lock)
    for angle in ("front", "back"):
        for i in (0, 1):
            image = lock[f"turn[{angle}]"]["output"]["images"][i]["id"]
            assert lock[f"dressed[{angle}-{i}]"]["output"]["message"] == f"{angle} {image}"
    assert lock["inked[left]"]["output"]["message"] == \
        lock["sketch[left]"]["output"]["images"][0]["id"]
    paid = created(emulator)

    project.write("turn", TURN.replace("[front, left, back]", "[back, front, left]"))
    again = project.run("turn")
    assert again.code == 0 and "18 cached" in again.err, again.text
    assert created(emulator) == paid
    assert project.lock("turn")["instances"] == lock


PICKED = f"""\
version: 1
name: picked
steps:
  shot:
    type: imageGen
    matrix:
      product: [PRODUCTS]
      bg: [marble, linen]
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
      message: '{{{{ steps.shot[{{"product": "mug", "bg": "marble"}}].images[0].id }}}}'
  linen:
    type: echo
    matrix:
      product: [mug, cap]
    input:
      message: '{{{{ steps.shot[{{"bg": "linen", "product": matrix.product}}].images[0].id }}}}'
"""


def test_an_instance_picked_by_its_matrix_values_survives_reordering(
        ready: tuple[Project, RunningEmulator]) -> None:
    """steps.shot[{"product": "mug", "bg": "marble"}] reads that shot, however the matrix
    is ordered, with no `key:` to write; a value the matrix does not have fails validate."""
    project, emulator = ready
    project.write("picked", PICKED.replace("PRODUCTS", "mug, cap, tee"))
    first = project.run("picked")
    assert first.code == 0 and ": 9 succeeded;" in first.err, first.text
    lock = project.lock("picked")["instances"]
    image = lock["shot[product=mug,bg=marble]"]["output"]["images"][0]["id"]
    assert lock["hero"]["output"]["message"] == image
    assert lock["linen[product=cap]"]["output"]["message"] == \
        lock["shot[product=cap,bg=linen]"]["output"]["images"][0]["id"]
    paid = created(emulator)

    project.write("picked", PICKED.replace("PRODUCTS", "tee, cap, mug"))
    again = project.run("picked")
    assert again.code == 0 and "9 cached" in again.err, again.text
    assert created(emulator) == paid

    project.write("picked", PICKED.replace("PRODUCTS", "cap, tee"))
    refused = project.cli("validate", "pipelines/picked.yaml")
    assert refused.code == 2, refused.text
    assert 'pipelines/picked.yaml:21:16: step \'shot\' has no instance with product="mug"' \
        in refused.out, refused.out
    assert "pipelines/picked.yaml:27:16: in step 'linen': step 'shot' has no instance with " \
        'bg="linen", product="mug"' in refused.out, refused.out
    assert created(emulator) == paid


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
