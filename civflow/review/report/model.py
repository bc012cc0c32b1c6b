"""What a report shows, as plain data: pipelines, steps (with their matrix axes) and cards.

A card is one instance: its status against the base (added / removed / changed /
unchanged), the fields that changed, and the lock entry of each side. The builders
here read lockfiles (the head side alone) or the review model of `civflow.review.diff`
(head against a base); the page renderer only ever sees this model.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from civflow.loading.model import PipelineSpec, StepSpec
from civflow.store.lockfile import LockedInstance

__all__ = ["STATUSES", "Card", "FieldChange", "PipelineView", "StepView", "axes_of"]

STATUSES = ("changed", "added", "removed", "unchanged")


@dataclass(frozen=True)
class FieldChange:
    """One input field that differs between base and head, as the diff names it."""

    path: str
    old: Any
    new: Any


@dataclass(frozen=True)
class Card:
    """One instance on the page, with the lock entry of each side that has one."""

    pipeline: str
    step: str
    name: str
    status: str  # one of STATUSES
    head: LockedInstance | None
    base: LockedInstance | None
    matrix: Mapping[str, Any] = field(default_factory=dict)
    fields: tuple[FieldChange, ...] = ()
    reasons: tuple[str, ...] = ()  # why it changed beyond its fields (an upstream did)
    decision: str | None = None  # what `run` would do on the head: new, cached, changed…
    estimate: float | None = None  # Buzz, when the head would run it
    # True when the head entry is what the head's pipeline asks for (else it is stale:
    # the pictures are of an earlier version, and `run` makes new ones).
    head_current: bool = True
    # The emulator's picture of exactly what the head asks for, when no paid result is:
    # shown labelled as a preview, never as the result.
    preview: LockedInstance | None = None
    # Values of its requests that are an upstream instance's output -> that instance, so
    # its details read `output of shot[mug-marble]`, not a content hash.
    made: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepView:
    name: str
    type: str
    axes: tuple[tuple[str, tuple[Any, ...]], ...]  # the matrix as written; () for none
    cards: tuple[Card, ...]


@dataclass(frozen=True)
class PipelineView:
    name: str
    path: str  # as the user named it (head file, or the base's for a removed pipeline)
    status: str  # added / removed / renamed / modified / unchanged
    root: Path  # the project root: `.civflow/objects` and `out/` live here
    head_lock_dir: Path | None
    base_lock_dir: Path | None
    steps: tuple[StepView, ...]
    base_spent: float = 0.0
    estimate: float = 0.0
    delta: float = 0.0  # what merging costs (civflow.review.diff), never netted
    notes: tuple[str, ...] = ()
    unpriced: int = 0  # instances only the run can price: "+ N priced at run time"
    paid_on_branch: float = 0.0

    @property
    def cards(self) -> list[Card]:
        return [card for step in self.steps for card in step.cards]


def axes_of(step: StepSpec | None) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    return tuple((k, tuple(v)) for k, v in step.matrix) if step is not None else ()


def group_steps(cards: Sequence[Card], head: PipelineSpec | None,
                base: PipelineSpec | None) -> tuple[StepView, ...]:
    """Cards grouped by step: the head's steps in file order, then the base's removed
    steps, then any step neither file has (stale lock entries); matrix steps in the
    order their combinations are written, others by name."""
    by_step: dict[str, list[Card]] = {}
    for card in cards:
        by_step.setdefault(card.step, []).append(card)
    order = list(dict.fromkeys(itertools.chain(
        head.steps if head else (), base.steps if base else (), sorted(by_step))))
    views = []
    for name in order:
        members = by_step.get(name)
        if not members:
            continue
        spec_step = (head.steps.get(name) if head else None) or \
            (base.steps.get(name) if base else None)
        axes = axes_of(spec_step)
        if axes:
            members.sort(key=lambda c: (_rank(c, axes), c.name))
        else:
            members.sort(key=lambda c: c.name)
        kind = spec_step.type if spec_step is not None else _entry_type(members)
        views.append(StepView(name, kind, axes, tuple(members)))
    return tuple(views)


def _rank(card: Card, axes: tuple[tuple[str, tuple[Any, ...]], ...]) -> tuple[int, ...]:
    """The card's place in the matrix as written (unknown values last)."""
    out = []
    for key, values in axes:
        value = card.matrix.get(key)
        out.append(next((i for i, v in enumerate(values) if v == value), len(values)))
    return tuple(out)


def _entry_type(cards: Sequence[Card]) -> str:
    for card in cards:
        entry = card.head or card.base
        if entry is not None:
            return entry.type
    return "?"
