"""One emulator's state: the parts that keep it, and the account of what was made.

`Engine` makes the parts and hands each the others it needs: the workflows' `Index`, their
`Archive` on disk, the `Views` the API answers with, and the `Clock` that moves steps
along. It keeps for itself what a submit creates and charges, and what a delete refunds.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from civflow.emulator import _steps
from civflow.emulator._archive import Archive
from civflow.emulator._blobs import BlobStore
from civflow.emulator._clock import Clock
from civflow.emulator._config import EmulatorConfig, apply_faults
from civflow.emulator._ids import WorkflowIds, job_id
from civflow.emulator._index import Index
from civflow.emulator._model import Step, Workflow
from civflow.emulator._pricing import step_prices
from civflow.emulator._views import Views


@dataclass
class Counters:
    """What the admin counters report: requests, creations and Buzz since the last reset."""

    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    workflows_created: int = 0
    external_id_hits: int = 0
    buzz_charged: float = 0.0
    creations_by_external_id: dict[str, int] = field(default_factory=dict)
    # Steps of created workflows (each charged with its workflow), by step name: a
    # client that names steps after what they make can prove nothing was made twice.
    steps_created: int = 0
    step_creations: dict[str, int] = field(default_factory=dict)
    buzz_by_step: dict[str, float] = field(default_factory=dict)

    def as_dict(self, engine: Engine) -> dict[str, Any]:
        return {"requests": self.requests, "workflows_created": self.workflows_created,
                "external_id_hits": self.external_id_hits, "buzz_charged": self.buzz_charged,
                "creations_by_external_id": self.creations_by_external_id,
                "steps_created": self.steps_created, "step_creations": self.step_creations,
                "buzz_by_step": self.buzz_by_step,
                "workflows": len(engine.index.workflows), "blobs": len(engine.blobs),
                "buzz_balance": engine.balance}


class Engine:
    """One emulator: owns its parts, and books what is created, charged and refunded."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.missing_airs: set[str] = set(config.missing_airs)
        self.blobs = BlobStore(config.state_dir)
        self.ids = WorkflowIds()
        self.rng = random.Random(config.fault_seed)
        self.counters = Counters()
        self.balance = config.buzz
        self._seq = 0
        self.index = Index()
        self.archive = Archive(config.state_dir, self.index)
        # Progress is timed on the loop, which the clock (made next) binds at start().
        self.views = Views(config, self.blobs, lambda: self.clock.loop.time())
        self.clock = Clock(config, self.rng, self.blobs, self.index, self.archive, self.views)

    def start(self) -> None:
        """Bind to the running loop and resume any persisted workflows."""
        resumed = self.archive.load()
        for workflow in resumed:
            self.ids.observe(workflow.id)
            self._seq = max(self._seq, workflow.seq)
            self.index.add(workflow)
        self.clock.start(resumed)

    def close(self) -> None:
        self.clock.close()

    def reset(self) -> None:
        """Forget every workflow, blob, count and forgotten AIR: the state as started (the
        fault settings, changed only on purpose, stay as they are)."""
        self.missing_airs = set(self.config.missing_airs)
        for workflow in list(self.index.workflows.values()):
            self.clock.drop(workflow)
        self.index.clear()
        self.blobs.clear()
        self.counters = Counters()
        self.balance = self.config.buzz
        self.rng.seed(self.config.fault_seed)  # in place: the clock draws from it too

    def create(self, body: dict[str, Any], steps: list[Step], cost: dict[str, Any],
               base_url: str, charge: int) -> Workflow:
        now = time.time()
        self._seq += 1
        currencies = body.get("currencies") or []
        account = currencies[0] if currencies else "yellow"
        transactions = {"list": [{"type": "debit", "amount": charge, "id": str(uuid.uuid4()),
                                  "accountType": account}]} if charge else {"list": []}
        workflow = Workflow(id=self.ids.next(now), seq=self._seq, created_at=now,
                            base_url=base_url, body=body, steps=steps, cost=cost,
                            transactions=transactions)
        self.index.add(workflow)
        external = body.get("externalId")
        if external:
            by_key = self.counters.creations_by_external_id
            by_key[external] = by_key.get(external, 0) + 1
        self.counters.workflows_created += 1
        self.counters.buzz_charged += charge
        for step, buzz in zip(steps, step_prices(steps), strict=True):
            made = self.counters.step_creations
            made[step.name] = made.get(step.name, 0) + 1
            self.counters.steps_created += 1
            by_step = self.counters.buzz_by_step
            by_step[step.name] = by_step.get(step.name, 0.0) + float(buzz)
        if self.balance is not None:
            self.balance -= charge
        self._give_jobs(steps)
        self.clock.submit(workflow)
        return workflow

    @staticmethod
    def _give_jobs(steps: list[Step]) -> None:
        """Each step its jobs, unassigned: as many as `image_count` says."""
        for step in steps:
            step.jobs = [{"id": job_id(), "status": "unassigned", "startedAt": None,
                          "completedAt": None, "cost": 1}
                         for _ in range(_steps.image_count(step.type, step.input)[0])]

    def preview(self, body: dict[str, Any], steps: list[Step], cost: dict[str, Any],
                base: str) -> dict[str, Any]:
        """The priced Workflow a whatif submit answers with; nothing is stored or run."""
        self._give_jobs(steps)
        currencies = body.get("currencies") or []
        transactions = {"list": [{"type": "debit", "amount": cost["total"],
                                  "accountType": currencies[0] if currencies else "yellow"}]}
        draft = Workflow(id="", seq=0, created_at=time.time(), base_url=base, body=body,
                         steps=steps, cost=cost, transactions=transactions)
        out = self.views.render(draft, base, outputs=False)
        out["id"] = None
        return out

    def retag(self, workflow: Workflow, tags: list[str]) -> None:
        self.index.retag(workflow, tags)
        self.archive.save(workflow)

    def delete(self, workflow: Workflow) -> None:
        """Soft-delete; refunds the charge when no step had reached processing yet."""
        untouched = all(step.started_at is None for step in workflow.steps)
        charged = sum(t["amount"] for t in workflow.transactions["list"]
                      if t["type"] == "debit")
        if untouched and charged:
            workflow.transactions["list"].append(
                {"type": "credit", "amount": charged, "id": str(uuid.uuid4()),
                 "accountType": workflow.transactions["list"][0]["accountType"]})
            self.counters.buzz_charged -= charged
            if self.balance is not None:
                self.balance += charged
        self.clock.cancel(workflow)
        self.clock.drop(workflow)

    def set_faults(self, changes: dict[str, Any]) -> list[str]:
        """Change fault settings at run time (see `apply_faults`); a new time scale also
        applies to the work in flight, not only to what begins from now on."""
        old = self.config.time_scale
        problems = apply_faults(self.config, changes)
        if self.config.time_scale != old:
            self.clock.rescale(old)
        return problems
