"""The run journal: an fsync'd, append-only record of intents and results, for crash recovery.

Layout: `<root>/<run-id>/journal.jsonl` (root is usually `<project>/.civflow/runs`) with
a `run.json` beside it naming the pipeline. Records, one JSON object per line:

    {"event": "run-started", "pipeline": ..., "argv": [...]}
    {"event": "intent", "instance", "fingerprint", "externalId", "attempt"}   before the POST
    {"event": "intent", ..., "batch": <the workflow's externalId>}            one per member
    {"event": "submitted", "instance", "workflowId"}                          after the answer
    {"event": "finished", "instance", "status", "cost", ...}
    {"event": "run-finished", "status"}

Because the intent (with its `externalId`) is on disk before the request leaves, a
run killed at any point can be resumed without paying twice: re-sending the same
`externalId` makes the API return the workflow it already created.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from civflow.errors import FileAccessError
from civflow.keys import nested_deeper_than
from civflow.store.atomic import atomic_write_text

__all__ = [
    "InstanceRun",
    "Journal",
    "RunState",
    "batch_external_id",
    "external_id",
    "find_unfinished_run",
    "new_run_id",
    "pipeline_runs",
]

# A record nesting deeper than this is damage: records are flat but for outputs.
MAX_DEPTH = 64
JOURNAL = "journal.jsonl"
META = "run.json"
_RUN_ID = re.compile(r"^\d{8}T\d{6}\.\d{6}Z-[0-9a-f]+$")

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def external_id(fingerprint: str, attempt: int) -> str:
    """The idempotency key of one submission: same fingerprint and attempt, same key.

    Matches the API's `^[A-Za-z0-9_-]{1,128}$`. A new attempt (after a failure, with
    --retry-failed) gets a new key, so the API creates a new workflow instead of
    returning the failed one.
    """
    if attempt < 1:
        raise ValueError(f"attempt numbers start at 1, not {attempt}")
    digest = hashlib.sha256(fingerprint.encode("utf-8")).hexdigest()[:40]
    return f"cf-{digest}-{attempt}"


def batch_external_id(member_keys: Iterable[str]) -> str:
    """The idempotency key of a workflow carrying several instances: derived from the
    members (`<instance>=<its own key>`) in submission order, so the same batch re-sent (a retry, a
    resumed run, a second machine with the same plan) is the same workflow."""
    keys = list(member_keys)
    if not keys:
        raise ValueError("a batch has at least one member")
    digest = hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()[:40]
    return f"cfb-{digest}-{len(keys)}"


def workflow_external_id(members: Sequence[tuple[str, str]]) -> str:
    """A workflow's externalId from its members' (instance, own key): a lone member's
    own key (so the API hands back the one workflow any clone sent for it), else
    `batch_external_id` of every member's name and key."""
    if len(members) == 1:
        return members[0][1]
    # Names too: two instances with one request share a key, not a step name.
    return batch_external_id(f"{name}={key}" for name, key in members)


def new_run_id(now: datetime, suffix: str | None = None) -> str:
    """`20250101T120000.123456Z-a1b2c3`: sorts by start time, unique by its random suffix."""
    now = now.astimezone(UTC)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond:06d}Z-{suffix or secrets.token_hex(3)}"


@dataclass(frozen=True)
class InstanceRun:
    """What the journal says of one instance: its latest intent and how far it got."""

    instance: str
    fingerprint: str
    external_id: str
    attempt: int
    workflow_id: str | None = None
    finished_status: str | None = None
    cost: float | None = None
    blocked: bool = False


@dataclass(frozen=True)
class RunState:
    """The fold of a journal's records: per instance the latest intent and its outcome."""

    instances: Mapping[str, InstanceRun] = field(default_factory=dict)
    finished: bool = False

    def get(self, instance: str) -> InstanceRun | None:
        return self.instances.get(instance)

    @classmethod
    def fold(cls, records: Iterable[Mapping[str, Any]]) -> RunState:
        instances: dict[str, InstanceRun] = {}
        finished = False
        for record in records:
            event = record.get("event")
            name = record.get("instance")
            if event == "run-finished":
                finished = True
            elif event in ("run-started", "run-resumed"):
                finished = False
            if not isinstance(name, str):
                continue
            seen = instances.get(name)
            if event == "intent":
                attempt = record.get("attempt")
                instances[name] = InstanceRun(
                    instance=name, fingerprint=str(record.get("fingerprint", "")),
                    external_id=str(record.get("externalId", "")),
                    attempt=attempt if isinstance(attempt, int) else 1)
            elif event == "submitted" and seen is not None:
                workflow_id = record.get("workflowId")
                instances[name] = replace(
                    seen, workflow_id=workflow_id if isinstance(workflow_id, str) else None)
            elif event == "finished" and seen is not None:
                cost = record.get("cost")
                workflow_id = record.get("workflowId")
                instances[name] = replace(
                    seen, finished_status=str(record.get("status")),
                    cost=float(cost) if isinstance(cost, int | float) else None,
                    blocked=record.get("blocked") is True,
                    workflow_id=workflow_id if isinstance(workflow_id, str)
                    else seen.workflow_id)
        return cls(instances, finished)


def _read_lines(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise FileAccessError(path=str(path), reason=exc.strerror or str(exc)) from exc
    # A process killed mid-write leaves a last line without its newline: it never
    # happened, since the caller did not get past append() for it.
    complete, _, _torn = data.rpartition(b"\n")
    if not complete and not data.endswith(b"\n"):
        return
    for number, line in enumerate(complete.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FileAccessError(
                path=str(path), reason=f"line {number} is not a JSON record") from exc
        except RecursionError:
            record = None
            too_deep = True
        else:
            too_deep = nested_deeper_than(record, MAX_DEPTH)
        if too_deep:
            raise FileAccessError(
                path=str(path), reason=f"line {number} nests more than {MAX_DEPTH} levels deep")
        if isinstance(record, Mapping):
            yield number, record


class Journal:
    """One run's journal; create it with `Journal.create`, reopen it with `Journal.open`."""

    def __init__(self, run_dir: Path, *, pipeline: str, clock: Clock = _utc_now) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        self.pipeline = pipeline
        self.path = self.run_dir / JOURNAL
        self._clock = clock
        self._repaired = False
        # Group commit: appends from several threads at once share one write and fsync.
        self._commit = threading.Condition()
        self._waiting: list[bytes] = []  # encoded records not yet handed to a write
        self._queued = 0  # appends numbered in arrival order ...
        self._durable = 0  # ... and how far they are settled (written, or failed)
        self._writing = False
        self._failed: list[tuple[int, int, BaseException]] = []  # (after, up to, error)

    def __repr__(self) -> str:
        return f"Journal({str(self.run_dir)!r}, pipeline={self.pipeline!r})"

    @classmethod
    def create(cls, root: Path, pipeline_name: str, *, clock: Clock = _utc_now,
               suffix: str | None = None) -> Journal:
        """A new, empty run folder under `root` for the pipeline."""
        run_id = new_run_id(clock(), suffix)
        run_dir = Path(root) / run_id
        try:
            run_dir.mkdir(parents=True, exist_ok=False)
        except OSError as exc:
            raise FileAccessError(path=str(run_dir), reason=exc.strerror or str(exc)) from exc
        meta = {"pipeline": pipeline_name, "runId": run_id, "createdAt": _iso(clock())}
        atomic_write_text(run_dir / META, json.dumps(meta, sort_keys=True, indent=2) + "\n")
        return cls(run_dir, pipeline=pipeline_name, clock=clock)

    @classmethod
    def open(cls, run_dir: Path, *, clock: Clock = _utc_now) -> Journal:
        """An existing run folder (appending continues where it stopped)."""
        meta_path = Path(run_dir) / META
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise FileAccessError(path=str(meta_path), reason="no such run") from exc
        except (OSError, ValueError, RecursionError) as exc:
            raise FileAccessError(path=str(meta_path), reason="unreadable run metadata") \
                from exc
        pipeline = meta.get("pipeline") if isinstance(meta, Mapping) else None
        if not isinstance(pipeline, str):
            raise FileAccessError(path=str(meta_path), reason="no pipeline name in it")
        return cls(Path(run_dir), pipeline=pipeline, clock=clock)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one record and fsync it before returning: after this, it survives a crash."""
        self.append_many([record])

    def append_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write records and fsync them before returning (a batch's intents, its results).

        Appends that arrive while a write is under way wait for it, then go out together
        in the next write and fsync (group commit): fifty batches posting at once share a
        handful of fsyncs instead of taking fifty in turn, and each caller still returns
        only once its own records are on disk. If that write fails, every caller in it
        gets the error."""
        now = _iso(self._clock())
        lines: list[str] = []
        for record in records:
            if "event" not in record:
                raise ValueError("a journal record needs an 'event'")
            full = {"at": now, **record}
            lines.append(json.dumps(full, sort_keys=True, ensure_ascii=False,
                                    separators=(",", ":")))
        if not lines:
            return
        with self._commit:
            self._waiting.append(("\n".join(lines) + "\n").encode("utf-8"))
            self._queued += 1
            mine = self._queued
            while self._durable < mine:
                if self._writing:
                    self._commit.wait()
                    continue
                self._lead()
            for after, upto, error in self._failed:
                if after < mine <= upto:
                    reason = error.strerror if isinstance(error, OSError) else None
                    raise FileAccessError(path=str(self.path), reason=reason or str(error)
                                          or type(error).__name__) from error

    def _lead(self) -> None:
        """Write everything waiting in one write and one fsync (called holding the lock,
        which is let go during the disk work), then wake the callers it settled."""
        data, self._waiting = b"".join(self._waiting), []
        after, upto = self._durable, self._queued
        self._writing = True
        self._commit.release()
        error: BaseException | None = None
        try:
            self._write(data)
        except OSError as exc:
            error = exc
        except BaseException as exc:  # interrupted: nobody in this write may think it done
            error = exc
            raise
        finally:
            self._commit.acquire()
            self._writing = False
            self._durable = upto
            if error is not None:
                self._failed.append((after, upto, error))
            self._commit.notify_all()

    def _write(self, data: bytes) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self._repaired:
            self._drop_torn_tail()
            self._repaired = True
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line left by a crash, so the next record starts on its own line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        if not data or data.endswith(b"\n"):
            return
        with open(self.path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
            handle.flush()
            os.fsync(handle.fileno())

    def records(self) -> list[Mapping[str, Any]]:
        """Every complete record, oldest first; a torn last line is ignored."""
        return [record for _, record in _read_lines(self.path)]

    def state(self) -> RunState:
        return RunState.fold(self.records())

    @property
    def finished(self) -> bool:
        return self.state().finished

    def highest_attempt(self, instance: str, fingerprint: str) -> int:
        """The highest attempt number used for this instance and fingerprint in any run of
        this pipeline under the same root (0 when never submitted).

        Looking beyond this run matters: `--retry-failed` in a fresh run must not reuse
        the key of the workflow that failed in an earlier run (the API would return it).
        """
        best = 0
        for journal in _runs(self.run_dir.parent, self.pipeline):
            for record in journal.records():
                attempt = record.get("attempt")
                if record.get("event") == "intent" and record.get("instance") == instance \
                        and record.get("fingerprint") == fingerprint \
                        and isinstance(attempt, int):
                    best = max(best, attempt)
        return best


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _runs(root: Path, pipeline_name: str) -> list[Journal]:
    """Every run of the pipeline under `root`, newest first."""
    try:
        folders = sorted((p for p in Path(root).iterdir()
                          if p.is_dir() and _RUN_ID.match(p.name)), reverse=True)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise FileAccessError(path=str(root), reason=exc.strerror or str(exc)) from exc
    runs: list[Journal] = []
    for folder in folders:
        with contextlib.suppress(FileAccessError):  # a foreign or half-made folder
            journal = Journal.open(folder)
            if journal.pipeline == pipeline_name:
                runs.append(journal)
    return runs


def pipeline_runs(root: Path, pipeline_name: str) -> list[Journal]:
    """Every run of the pipeline under `root`, newest first."""
    return _runs(root, pipeline_name)


def find_unfinished_run(root: Path, pipeline_name: str) -> Journal | None:
    """The pipeline's latest run, if it never reached `run-finished` (a crash or Ctrl-C).

    Only the latest run counts: once a later run finished, an older interrupted one
    is history, not something to resume.
    """
    runs = _runs(root, pipeline_name)
    if not runs or runs[0].finished:
        return None
    return runs[0]
