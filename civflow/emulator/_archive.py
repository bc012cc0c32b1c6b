"""Workflows kept on disk, one JSON file each under `state_dir/workflows`, so that an
emulator started again on the same folder takes them up where they were."""

from __future__ import annotations

import json
from pathlib import Path

from civflow.emulator._blobs import write_atomic
from civflow.emulator._index import Index
from civflow.emulator._model import Step, Workflow


class Archive:
    """Writes each live workflow to its file as it changes, and reads them all back."""

    def __init__(self, state_dir: Path | None, index: Index) -> None:
        self._folder = state_dir / "workflows" if state_dir is not None else None
        self._index = index  # what is live: a forgotten workflow is never written back

    def save(self, workflow: Workflow) -> None:
        if self._folder is None or workflow.id not in self._index.workflows:
            return
        write_atomic(self._folder / f"{workflow.id}.json", json.dumps(workflow.dump()).encode())

    def forget(self, workflow: Workflow) -> None:
        if self._folder is not None:
            (self._folder / f"{workflow.id}.json").unlink(missing_ok=True)

    def load(self) -> list[Workflow]:
        """The workflows kept, oldest first, as they were last saved."""
        if self._folder is None or not self._folder.is_dir():
            return []
        loaded = []
        for path in self._folder.glob("*.json"):
            data = json.loads(path.read_text())
            steps = []
            for raw in data["steps"]:
                deps = set(raw.pop("deps"))
                steps.append(Step(**raw, deps=deps))
            workflow = Workflow(id=data["id"], seq=data["seq"], created_at=data["created_at"],
                                base_url=data["base_url"], body=data["body"], steps=steps,
                                cost=data["cost"], transactions=data["transactions"],
                                status=data["status"], started_at=data["started_at"],
                                completed_at=data["completed_at"])
            loaded.append(workflow)
        return sorted(loaded, key=lambda w: w.seq)
