"""The review model (`civflow.review.diff.Review`) as the report's pipelines and cards."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from civflow.loading.model import project_root_for
from civflow.producers import Producers
from civflow.review.diff import InstanceChange, PipelineReview, Review, compare
from civflow.review.report.model import Card, FieldChange, PipelineView, group_steps
from civflow.store.lockfile import LockedInstance

__all__ = ["review_views", "views_of"]


def review_views(files: Sequence[Path], base: str | None, cwd: Path,
                 paths: Sequence[Path] = ()) -> list[PipelineView]:
    """Plan `files` in the working tree (and as of `base`), as the report's pipelines.
    With the `paths` they were found by, pipelines the change removed are there too, as
    in `civflow plan --base`: the same review, the same money."""
    return views_of(compare(list(paths), base, cwd=cwd, head_files=list(files)), cwd)


def views_of(review: Review, cwd: Path) -> list[PipelineView]:
    return [_pipeline(p, cwd) for p in review.pipelines]


def _pipeline(review: PipelineReview, cwd: Path) -> PipelineView:
    shown = review.head_path or review.base_path or review.name
    root = review.project_root or project_root_for(cwd / shown)
    cards = [_card(review.name, inst, review.previews, review.producers)
             for inst in review.instances]
    return PipelineView(
        review.name, shown, review.status, root, review.head_lock_dir, review.base_lock_dir,
        group_steps(cards, review.head_spec, None),
        base_spent=review.base_spent, estimate=review.estimate, delta=review.delta,
        notes=review.notes, unpriced=review.unpriced, paid_on_branch=review.paid_on_branch)


def _card(pipeline: str, inst: InstanceChange, previews: Mapping[str, LockedInstance],
          producers: Producers) -> Card:
    decision = inst.decision
    # The head's lock entry shows what the head asks for only when the plan would not
    # make it again; otherwise its pictures are of an earlier version.
    current = inst.head_entry is not None and inst.planned is not None \
        and not inst.planned.decision.runs and decision != "skipped"
    preview = previews.get(inst.name)
    if current or inst.planned is None or preview is None or \
            preview.fingerprint != inst.planned.instance.fingerprint:
        preview = None
    fields = tuple(FieldChange(f.path, f.old, f.new) for f in inst.fields)
    return Card(pipeline, inst.step, inst.name, inst.status, head=inst.head_entry,
                base=inst.base_entry, matrix=dict(inst.matrix), fields=fields,
                reasons=inst.reasons if inst.status == "changed" else (),
                decision=decision, estimate=inst.estimate if inst.runs else None,
                head_current=current, preview=preview,
                made={text: name for entry in (inst.base_entry, inst.head_entry, preview)
                      if entry is not None
                      for text, name in producers.named(entry.request).items()})
