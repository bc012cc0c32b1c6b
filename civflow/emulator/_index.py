"""The emulator's live workflows, and the indexes the list route pages through."""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator

from civflow.emulator._model import Workflow


class Index:
    """Finds live workflows: by id, by external id, and by tag in order of creation."""

    def __init__(self) -> None:
        self.workflows: dict[str, Workflow] = {}
        self.by_external: dict[str, str] = {}
        self._order: list[tuple[int, str]] = []  # (seq, id), ascending
        self._by_tag: dict[str, list[tuple[int, str]]] = {}

    def add(self, workflow: Workflow) -> None:
        self.workflows[workflow.id] = workflow
        entry = (workflow.seq, workflow.id)
        self._order.append(entry)
        for tag in workflow.body.get("tags") or []:
            bisect.insort(self._by_tag.setdefault(tag, []), entry)
        external = workflow.body.get("externalId")
        if external:
            self.by_external[external] = workflow.id

    def retag(self, workflow: Workflow, tags: list[str]) -> None:
        """Give the workflow these tags (a tag it loses is skipped when listing)."""
        entry = (workflow.seq, workflow.id)
        for tag in tags:
            bucket = self._by_tag.setdefault(tag, [])
            position = bisect.bisect_left(bucket, entry)
            if position == len(bucket) or bucket[position] != entry:
                bucket.insert(position, entry)
        workflow.body["tags"] = tags

    def remove(self, workflow: Workflow) -> None:
        """Forget a workflow (its entries stay in the lists, skipped when listing)."""
        self.workflows.pop(workflow.id, None)
        external = workflow.body.get("externalId")
        if external and self.by_external.get(external) == workflow.id:
            # A deleted workflow frees its key: a later submit creates a new one.
            del self.by_external[external]

    def clear(self) -> None:
        self.workflows.clear()
        self.by_external.clear()
        self._order.clear()
        self._by_tag.clear()

    def query(self, *, tags: list[str], take: int, cursor: str | None, ascending: bool,
              exclude_failed: bool, text: str | None, from_ts: float | None,
              to_ts: float | None) -> tuple[list[Workflow], str]:
        """A page of workflows newest first (or oldest first), filtered; and the next cursor."""
        pool = self._order
        if tags:
            pool = min((self._by_tag.get(t, []) for t in tags), key=len)
        start_seq = int(cursor) if cursor and cursor.isdigit() else None
        if ascending:
            position = bisect.bisect_right(pool, (start_seq, "\uffff")) if start_seq else 0
            candidates: Iterator[tuple[int, str]] = iter(pool[position:])
        else:
            position = bisect.bisect_left(pool, (start_seq, "")) if start_seq else len(pool)
            candidates = (pool[i] for i in range(position - 1, -1, -1))
        page: list[Workflow] = []
        more = False
        for _, workflow_id in candidates:
            workflow = self.workflows.get(workflow_id)
            if workflow is None or not self._matches(workflow, tags, exclude_failed, text,
                                                     from_ts, to_ts):
                continue
            if len(page) == take:
                more = True
                break
            page.append(workflow)
        return page, (str(page[-1].seq) if more and page else "")

    @staticmethod
    def _matches(workflow: Workflow, tags: list[str], exclude_failed: bool, text: str | None,
                 from_ts: float | None, to_ts: float | None) -> bool:
        own = workflow.body.get("tags") or []
        if any(tag not in own for tag in tags):
            return False
        if exclude_failed and workflow.status in ("failed", "expired", "canceled"):
            return False
        if from_ts is not None and workflow.created_at < from_ts:
            return False
        if to_ts is not None and workflow.created_at > to_ts:
            return False
        return not text or text.lower() in json.dumps(workflow.body.get("metadata")).lower()
