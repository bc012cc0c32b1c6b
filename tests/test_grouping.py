"""The grouping decision: which instances share a workflow, and how a batch's charge is split."""

from __future__ import annotations

from pathlib import Path

from civflow.check import check_pipeline
from civflow.grouping import (
    DEFAULT_BATCH,
    Ref,
    apportion,
    batch_size,
    batches,
    fused_refs,
    group_plan,
    rendered_bodies,
)
from civflow.loading import load_pipeline
from civflow.planning import Plan, PlanOptions, plan

PIPELINE = """\
version: 1
name: packed
steps:
  a:
    type: echo
    matrix: {i: [1, 2, 3, 4, 5]}
    input: {message: "a {{ matrix.i }}"}
  b:
    type: echo
    matrix: {i: [1, 2]}
    input: {message: "b {{ matrix.i }}"}
  c:
    type: echo
    needs: [a]
    input: {message: "{{ steps.a.outputs[0].message }}"}
"""


def _plan(tmp_path: Path, only: tuple[str, ...] = ()) -> Plan:
    path = tmp_path / "packed.yaml"
    path.write_text(PIPELINE, encoding="utf-8")
    return plan(check_pipeline(load_pipeline(path)), {}, PlanOptions(only=only))


def test_a_steps_instances_are_packed_in_plan_order_never_mixed_with_another_step(
        tmp_path: Path) -> None:
    """Promise: the same plan gives the same batches (so the same batch externalId on any
    machine); steps are not mixed; instances known only at run time are not packed yet."""
    made = _plan(tmp_path)
    packed = batches(made.instances, 2)
    assert [b.members for b in packed] == [
        ("a[i=1]", "a[i=2]"), ("a[i=3]", "a[i=4]"), ("a[i=5]",), ("b[i=1]", "b[i=2]")]
    assert batches(made.instances, 2) == packed
    assert [b.members for b in batches(made.instances, 1)][:2] == [
        ("a[i=1]",), ("a[i=2]",)]


def test_only_what_runs_is_packed(tmp_path: Path) -> None:
    """Promise: --only works per instance as before: a filtered-out instance never rides
    along in a batch."""
    made = _plan(tmp_path, only=("a[i=2]", "a[i=4]"))
    assert [b.members for b in batches(made.instances, 10)] == [
        ("a[i=2]", "a[i=4]")]


def test_batch_size_bounds_and_default() -> None:
    assert batch_size(None) == DEFAULT_BATCH
    assert batch_size(0) == 1 and batch_size(1000) == 100 and batch_size(7) == 7


def test_apportion_sums_to_the_charge() -> None:
    """Promise: per-instance costs in the lockfile add up to exactly what was charged,
    and no member of a paid batch is recorded as free."""
    assert apportion(17, [8.0, 8.0, 2.0]) == [7.55, 7.55, 1.9]
    assert sum(apportion(10, [1.0, 1.0, 1.0])) == 10
    assert apportion(3, [0.5] * 6) == [0.5] * 6
    assert apportion(9, [None, None, None]) == [3.0, 3.0, 3.0]
    assert apportion(0, [5.0, 5.0]) == [0.0, 0.0]
    assert sum(apportion(2.5, [1.0, 1.0])) == 2.5
    assert apportion(5, []) == []


def test_render_shows_fused_bodies_as_they_will_be_sent(tmp_path: Path) -> None:
    """Promise: `render` can show fused bodies: hero, its two upscales (a foreach over
    `quantity: 2`) and the clip as one WorkflowTemplate whose inputs are `$ref`s."""
    from tests.e2e.support import CHAIN

    path = tmp_path / "chain.yaml"
    path.write_text(CHAIN.replace("name: chain", "name: chain\nbatch: 10"), encoding="utf-8")
    checked = check_pipeline(load_pipeline(path))
    made = plan(checked)
    ((batch, body),) = rendered_bodies(checked, made, group_plan(checked, made))
    assert batch.members == ("hero", "upscale[#0]", "upscale[#1]", "clip")
    steps = {s["name"]: s for s in body["steps"]}
    assert steps["upscale[#1]"]["input"]["image"] == {"$ref": "hero",
                                                      "path": "output.images[1].url"}
    assert steps["clip"]["input"]["images"] == [{"$ref": "upscale[#0]",
                                                 "path": "output.blob.url"}]
    assert body["metadata"]["civflow"]["instances"] == list(batch.members)
    unbatched = group_plan(check_pipeline(load_pipeline(path)), made, fuse=False).workflows
    assert [b.members for b in unbatched] == [("hero",)]


def test_text_around_an_output_cannot_be_a_ref() -> None:
    """Promise: only a whole value passes by `$ref`; a placeholder inside a longer text,
    or a path into a step that does not run here, keeps the step client-side."""
    from civflow.template import Pending

    running = {"a": ["a[i=0]", None]}
    assert fused_refs({"m": Pending("steps.a.outputs[0].message")}, running) == (
        Ref(("m",), "a[i=0]", "output.message"),)
    assert fused_refs({"m": "x <pending: steps.a.output.message> y"}, running) is None
    assert fused_refs({"m": Pending("steps.a.outputs[1].message")}, running) is None
    assert fused_refs({"m": Pending("steps.b.output.message")}, running) is None
    assert fused_refs({"m": "plain"}, running) == ()


def test_a_timed_out_batch_keeps_what_succeeded_and_fails_the_rest() -> None:
    """Promise: a per-step timeout cancels what it can: after civflow cancels a batch at
    its deadline, the member that had succeeded is still collected (its own step, its
    share of the cost); the other fails with the timeout as its reason."""
    from civflow.client.base import WorkflowState
    from civflow.runner.deadlines import timed_out_steps
    from civflow.runner.submission import member_state

    state = WorkflowState.from_json({
        "id": "wf-1", "status": "canceled", "cost": {"total": 4},
        "steps": [{"$type": "echo", "name": "a[i=0]", "status": "succeeded",
                   "output": {"message": "done"}, "completedAt": "2026-01-01T00:00:00Z"},
                  {"$type": "echo", "name": "a[i=1]", "status": "processing"}]})
    ended = timed_out_steps(state, 30)
    first, second = member_state(ended, "a[i=0]", 2), member_state(ended, "a[i=1]", 2)
    assert first.status == "succeeded" and first.malformed is None
    assert first.steps[0].output == {"message": "done"} and first.cost == 2
    assert first.raw["completedAt"] == "2026-01-01T00:00:00Z"
    assert second.status == "canceled"
    assert "timed out" in (second.failure().reason or "")
    missing = member_state(ended, "a[i=9]", 0)
    assert missing.status == "failed" and "no step" in (missing.failure().reason or "")


def test_a_fused_chain_never_outgrows_a_workflow(tmp_path: Path) -> None:
    """A 30-step chain with `batch: 5`: the first five steps ride in one workflow; the
    rest wait for real outputs (and are grouped the same way when they come up)."""
    steps = ["  s0:\n    type: echo\n    input: {message: start}\n"]
    steps += [f"  s{i}:\n    type: echo\n    input:\n"
              f"      message: \"{{{{ steps.s{i - 1}.output.message }}}}\"\n" for i in range(1, 30)]
    path = tmp_path / "chain.yaml"
    path.write_text("version: 1\nname: chain\nbatch: 5\nsteps:\n" + "".join(steps))
    checked = check_pipeline(load_pipeline(path))
    grouped = group_plan(checked, plan(checked)).workflows
    assert [list(b.members) for b in grouped] == [["s0", "s1", "s2", "s3", "s4"]]
