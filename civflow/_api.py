"""The public functions behind `civflow.load/loads/plan/estimate/run/…`; the CLI uses them too.

Each coroutine has a synchronous twin of exactly the same signature (`arun`/`run`,
`aestimate`/`estimate`), for scripts and notebooks: inside a running event loop
(Jupyter), or when given a backend, the twin runs the coroutine on civflow's worker loop
(a thread of its own), so it never trips over `asyncio.run`'s "cannot be called from a
running event loop" and a backend serves call after call.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from civflow.check import Checked
from civflow.client import Backend
from civflow.errors import RemoteError, SpendingRefused, UsageError
from civflow.origin import Origin
from civflow.planning import Plan, PlanOptions
from civflow.runner import Estimate, Prepared, RunOptions, RunResult
from civflow.runner.events import Event, Phase, Reporter, ignore

T = TypeVar("T")
Confirm = Callable[[Plan, Estimate], Awaitable[bool] | bool]


def _overrides(vars: Mapping[str, Any] | None, vars_files: Iterable[str | Path]
               ) -> dict[str, Any]:
    from civflow.loading import parse_var_overrides

    overrides = dict(parse_var_overrides((), [Path(f) for f in vars_files]))
    overrides.update(vars or {})
    return overrides


def load(path: str | Path, *, vars: Mapping[str, Any] | None = None,
         vars_files: Iterable[str | Path] = ()) -> Checked:
    """Parse and check a pipeline file; raise PipelineInvalid with located errors.

        >>> checked = civflow.load("pipelines/hero-shot.yaml", vars={"style": "oil"})
    """
    from civflow.check import check_pipeline
    from civflow.loading import load_pipeline

    return check_pipeline(load_pipeline(Path(path), _overrides(vars, vars_files)))


def loads(text: str, *, path: str | Path | None = None, vars: Mapping[str, Any] | None = None,
          vars_files: Iterable[str | Path] = ()) -> Checked:
    """`load` for a pipeline given as text: the same checks, the same `Checked`.

    Errors are located as `<string>:line:col`, or at `path` when given. `path` is also
    where the pipeline stands (it need not exist): includes, its lockfile and out/ are
    found from there. Without it the pipeline stands for `<name>.yaml` in the current
    folder, so its lockfile is `<name>.lock.json` there.

        >>> checked = civflow.loads(text, path="pipelines/sweep.yaml")
    """
    from civflow.check import check_pipeline
    from civflow.loading import load_pipeline_text

    return check_pipeline(load_pipeline_text(text, _overrides(vars, vars_files),
                                             path=None if path is None else Path(path)))


def _options(force: Iterable[str], reroll: Iterable[str], only: Iterable[str],
             retry_failed: bool) -> PlanOptions:
    return PlanOptions(force=frozenset(force), reroll=frozenset(reroll), only=tuple(only),
                       retry_failed=retry_failed)


def plan(checked: Checked, *, force: Iterable[str] = (), reroll: Iterable[str] = (),
         only: Iterable[str] = (), retry_failed: bool = False, emulator: bool = False) -> Plan:
    """What a run would do now and why, reading the lockfile and any interrupted run
    exactly as `civflow plan` does. No network. With `emulator=True`, what a run on
    the emulator would do (it caches only its own previews).

        >>> civflow.plan(checked).counts()
        {'cached': 3, 'changed': 1}
    """
    from civflow.runner import prepare

    return prepare(checked, _options(force, reroll, only, retry_failed),
                   origin=Origin.EMULATOR if emulator else Origin.CIVITAI).plan


def _one_backend(emulator: bool, backend: Backend | None, api_key_file: Path | None) -> None:
    """`backend=` is the caller's own connection: it excludes the ones civflow opens."""
    if backend is None:
        return
    if emulator:
        raise UsageError("pass either emulator=True or backend=…, not both",
                         hint="emulator=True starts an emulator in this process; to use "
                              "one already serving, pass backend=CivitaiClient(its url, key)")
    if api_key_file is not None:
        raise UsageError("api_key_file= is for the client civflow opens; with backend=… "
                         "the backend holds its own key")


@contextlib.asynccontextmanager
async def _backend(emulator: bool, backend: Backend | None, api_key_file: Path | None,
                   concurrency: int | None = None) -> AsyncIterator[Backend]:
    """The caller's backend (theirs to close), else one opened for the block."""
    from civflow.connect import open_backend

    if backend is not None:
        yield backend
        return
    async with open_backend(emulator, api_key_file, concurrency=concurrency) as opened:
        yield opened


async def aestimate(checked: Checked, *, emulator: bool = False,
                    backend: Backend | None = None, whatif: bool = False,
                    api_key_file: Path | None = None, force: Iterable[str] = (),
                    reroll: Iterable[str] = (), only: Iterable[str] = (),
                    retry_failed: bool = False) -> Estimate:
    """Buzz for what a run would submit. Offline by the catalog's formulas; with
    `whatif=True` the API (or the emulator, or `backend`) prices every instance it can.
    A `backend` is asked which API it is, so the estimate knows what it has cached.

        >>> (await civflow.aestimate(checked, whatif=True, emulator=True)).total
    """
    from civflow.runner import estimate, prepare

    _one_backend(emulator, backend, api_key_file)
    planned_with = _options(force, reroll, only, retry_failed)
    if backend is not None:
        origin = await backend.identify()
    else:
        origin = Origin.EMULATOR if emulator else Origin.CIVITAI
    prepared = prepare(checked, planned_with, origin=origin)
    if not whatif:
        return await estimate(prepared, None)
    async with _backend(emulator, backend, api_key_file) as connected:
        return await estimate(prepared, connected, whatif_all=True)


def estimate(checked: Checked, *, emulator: bool = False, backend: Backend | None = None,
             whatif: bool = False, api_key_file: Path | None = None,
             force: Iterable[str] = (), reroll: Iterable[str] = (), only: Iterable[str] = (),
             retry_failed: bool = False) -> Estimate:
    """`aestimate`, from synchronous code (a notebook cell too); the same arguments.

        >>> civflow.estimate(checked).total
        678.0
    """
    return _sync(aestimate(checked, emulator=emulator, backend=backend, whatif=whatif,
                           api_key_file=api_key_file, force=force, reroll=reroll, only=only,
                           retry_failed=retry_failed), backend=backend)


async def arun(checked: Checked, *, emulator: bool = False, backend: Backend | None = None,
               yes: bool = False, confirm: Confirm | None = None,
               max_cost: float | None = None, force: Iterable[str] = (),
               reroll: Iterable[str] = (), only: Iterable[str] = (),
               retry_failed: bool = False, concurrency: int = 8, batch: int | None = None,
               fail_fast: bool = False, out_dir: Path | None = None, wait: bool = False,
               keep_stale: bool = False, update_lockfile: bool = False,
               api_key_file: Path | None = None,
               on_event: Reporter | None = None) -> RunResult:
    """Run a checked pipeline to the end; the same steps as `civflow run`.

    Where: an emulator started in this process (`emulator=True`), your own `backend`
    (a `civflow.client.CivitaiClient`, or anything that keeps the `Backend` protocol;
    yours to close), else `CIVITAI_BASE_URL` with `CIVITAI_API_KEY` (or `api_key_file`).
    Only `emulator=True` runs without consent: otherwise pass `yes=True`, or a
    `confirm(plan, estimate)` that returns True; `max_cost` caps the charge. The
    pipeline's run lock is held throughout (RunLocked when another run holds it,
    unless `wait=True`). Files of "cached (remote)" instances are pulled from the
    project's remote first; pushing is left to `civflow.remote.push_pipelines` (the
    CLI's `run --push`). `batch` overrides the pipeline's `batch` key, as
    `run --batch N` does.

    `on_event` hears every `Event` of the run, in order, on the thread that runs it
    (for `run` in a notebook, a worker thread): each instance's phases, and the run's
    own (`Phase.LOCKED`, `Phase.RESUMED`, `Phase.REMOTE`, with `instance == ""`).

        >>> result = await civflow.arun(checked, emulator=True, on_event=print)
        >>> result.files["hero"]
    """
    from civflow.runner import execute, gone_blobs, prepare
    from civflow.runner.lock import wait_for_run_lock
    from civflow.runner.state import project_root

    _one_backend(emulator, backend, api_key_file)
    if not emulator and not yes and confirm is None:
        raise SpendingRefused("a run against the real API needs consent",
                              hint="pass yes=True, or confirm=… to be asked with the "
                                   "plan and its estimate")
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100:
            raise UsageError(f"batch={batch!r}: expected a whole number from 1 to 100")
        checked = dataclasses.replace(
            checked, spec=dataclasses.replace(checked.spec, batch_override=batch))
    report = on_event or ignore
    options = RunOptions(concurrency=concurrency, max_cost=max_cost, fail_fast=fail_fast,
                         out_dir=out_dir, keep_stale=keep_stale)
    held = await wait_for_run_lock(
        checked.spec, project_root(checked.spec), wait=wait,
        on_wait=lambda holder: report(Event("", Phase.LOCKED, detail=holder)))
    try:
        planned_with = _options(force, reroll, only, retry_failed)

        async def asked(plan: Plan, cost: Estimate) -> bool:
            if yes:
                return True
            assert confirm is not None
            answer = confirm(plan, cost)
            return bool(await answer) if isinstance(answer, Awaitable) else bool(answer)

        async with _backend(emulator, backend, api_key_file, concurrency) as connected:
            # Which API this is decides what counts as done: only its own results are
            # cached (an emulator's picture is a preview, never paid work). A served
            # emulator says so itself, whatever its URL.
            origin = await connected.identify()
            prepared = prepare(checked, planned_with, update_lockfile=update_lockfile,
                               out_dir=out_dir, origin=origin)
            if prepared.resumed is not None:
                report(Event("", Phase.RESUMED, detail=prepared.resumed.run_id))
            for line in await asyncio.to_thread(_pull_cached, prepared):
                report(Event("", Phase.REMOTE, detail=line))
            # Paid-for files no copy here can give are asked of Civitai before the plan
            # is shown: those it forgot are planned as work, priced, capped and consented.
            gone = await gone_blobs(prepared, connected)
            if gone:
                prepared = prepare(checked, planned_with, update_lockfile=update_lockfile,
                                   out_dir=out_dir, gone=gone, origin=origin)
            return await execute(prepared, connected, options, reporter=report,
                                 confirm=None if emulator else asked)
    finally:
        held.release()


def _pull_cached(prepared: Prepared) -> list[str]:
    """Pull, many at a time, what the plan's "cached (remote)" instances need, and say
    how it went; the executor then restores their files from the store. A remote that
    fails leaves those files to the blob ids (downloaded again, nothing is submitted)."""
    from civflow.planning import Decision
    from civflow.remote import fetch_objects

    policy = prepared.plan.policy
    wanted: set[str] = set()
    for planned in prepared.plan.instances:
        prior = policy.prior_for(planned.instance)
        if prior is not None and planned.decision is Decision.CACHED:
            wanted.update(prior.remote)
    if not wanted:
        return []
    try:
        found = fetch_objects(prepared.root, wanted)
    except RemoteError as exc:
        return [f"{exc.message}; the files are downloaded again by blob id instead"]
    told = [f"pulled {len(found.pulled)} object(s) from the remote"]
    if found.corrupt:
        told.append(f"{len(found.corrupt)} object(s) on the remote do not match their "
                    f"sha256 and were not used ({', '.join(found.corrupt[:3])}); "
                    "downloaded again by blob id")
    return told


def run(checked: Checked, *, emulator: bool = False, backend: Backend | None = None,
        yes: bool = False, confirm: Confirm | None = None, max_cost: float | None = None,
        force: Iterable[str] = (), reroll: Iterable[str] = (), only: Iterable[str] = (),
        retry_failed: bool = False, concurrency: int = 8, batch: int | None = None,
        fail_fast: bool = False, out_dir: Path | None = None, wait: bool = False,
        keep_stale: bool = False, update_lockfile: bool = False,
        api_key_file: Path | None = None, on_event: Reporter | None = None) -> RunResult:
    """`arun` from synchronous code: a script, or a notebook cell (whose event loop is
    already running). The same arguments.

        >>> result = civflow.run(checked, emulator=True)
        >>> print(result.table())
    """
    return _sync(arun(checked, emulator=emulator, backend=backend, yes=yes, confirm=confirm,
                      max_cost=max_cost, force=force, reroll=reroll, only=only,
                      retry_failed=retry_failed, concurrency=concurrency, batch=batch,
                      fail_fast=fail_fast, out_dir=out_dir, wait=wait, keep_stale=keep_stale,
                      update_lockfile=update_lockfile, api_key_file=api_key_file,
                      on_event=on_event), backend=backend)


def _sync(work: Coroutine[Any, Any, T], *, backend: Backend | None = None) -> T:
    """Run a coroutine to its end from synchronous code: in a script on a loop of its
    own (`asyncio.run`); inside a running loop (a notebook), or when the caller passes a
    backend, on civflow's worker loop. A backend (its pooled connections) belongs to
    the loop it first ran on: the one worker loop lets it serve call after call."""
    if backend is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(work)
    return _on_worker(work)


# After an interrupt, how long `run` waits for the work to stop and checkpoint. Stopping
# takes well under a second (cancel, then write the lockfile); this bounds a hung disk.
_STOP_GRACE = 10.0

_worker: list[asyncio.AbstractEventLoop] = []
_worker_started = threading.Lock()


def _worker_loop() -> asyncio.AbstractEventLoop:
    """The worker loop, started on first use on a daemon thread of its own."""
    with _worker_started:
        if not _worker or not _worker[0].is_running():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="civflow-run", daemon=True).start()
            _worker[:] = [loop]
        return _worker[0]


def _on_worker(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on the worker loop while this thread waits. An interrupt of the
    waiting thread (Ctrl-C, the notebook's stop button: a KeyboardInterrupt here)
    cancels the work at once, so nothing more is submitted, and lets it checkpoint
    before the interrupt goes on."""
    loop = _worker_loop()
    task: list[asyncio.Task[T]] = []
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def settle(done: asyncio.Task[T]) -> None:
        if done.cancelled():
            outcome.cancel()
        elif (error := done.exception()) is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(done.result())

    def start() -> None:
        task.append(loop.create_task(work))
        task[0].add_done_callback(settle)

    loop.call_soon_threadsafe(start)
    try:
        return outcome.result()
    except KeyboardInterrupt:
        # Queued after `start`: the task exists when this runs.
        loop.call_soon_threadsafe(lambda: task[0].cancel())
        with contextlib.suppress(BaseException):
            outcome.result(timeout=_STOP_GRACE)
        raise
