"""The public functions behind `civflow.load/plan/estimate/run/arun`; the CLI uses them too.

`run` works in scripts and in notebooks: inside a running event loop (Jupyter) it
runs `arun` on a worker thread with a loop of its own, so it never trips over
`asyncio.run`'s "cannot be called from a running event loop".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from civflow.check import Checked
from civflow.errors import RemoteError, SpendingRefused, UsageError
from civflow.origin import Origin
from civflow.plan import Plan, PlanOptions
from civflow.runner import Estimate, Prepared, RunOptions, RunResult
from civflow.runner.events import Reporter, ignore

T = TypeVar("T")
Confirm = Callable[[Plan, Estimate], Awaitable[bool] | bool]


def load(path: str | Path, *, vars: Mapping[str, Any] | None = None,
         vars_files: Iterable[str | Path] = ()) -> Checked:
    """Parse and check a pipeline file; raise PipelineInvalid with located errors.

        >>> checked = civflow.load("pipelines/hero-shot.yaml", vars={"style": "oil"})
    """
    from civflow.check import check_pipeline
    from civflow.load import load_pipeline, parse_var_overrides

    overrides = dict(parse_var_overrides((), [Path(f) for f in vars_files]))
    overrides.update(vars or {})
    return check_pipeline(load_pipeline(Path(path), overrides))


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


async def aestimate(checked: Checked, *, emulator: bool = False, whatif: bool = False,
                    api_key_file: Path | None = None, force: Iterable[str] = (),
                    reroll: Iterable[str] = (), only: Iterable[str] = ()) -> Estimate:
    """Buzz for what a run would submit. Offline by the catalog's formulas; with
    `whatif=True` the API (or the emulator) prices every instance it can.

        >>> (await civflow.aestimate(checked, whatif=True, emulator=True)).total
    """
    from civflow.runner import estimate, prepare
    from civflow.runner.connect import open_backend

    prepared = prepare(checked, _options(force, reroll, only, False),
                       origin=Origin.EMULATOR if emulator else Origin.CIVITAI)
    if not whatif:
        return await estimate(prepared, None)
    async with open_backend(emulator, api_key_file) as backend:
        return await estimate(prepared, backend, whatif_all=True)


def estimate(checked: Checked, **options: Any) -> Estimate:
    """`aestimate`, from synchronous code (a notebook cell too).

        >>> civflow.estimate(checked).total
        678.0
    """
    return _sync(aestimate(checked, **options))


async def arun(checked: Checked, *, emulator: bool = False, yes: bool = False,
               confirm: Confirm | None = None, max_cost: float | None = None,
               force: Iterable[str] = (), reroll: Iterable[str] = (),
               only: Iterable[str] = (), retry_failed: bool = False, concurrency: int = 8,
               fail_fast: bool = False, out_dir: Path | None = None, wait: bool = False,
               keep_stale: bool = False, update_lockfile: bool = False,
               api_key_file: Path | None = None, reporter: Reporter = ignore,
               on_wait: Callable[[str], None] | None = None,
               on_resume: Callable[[str], None] | None = None,
               on_remote: Callable[[str], None] | None = None,
               pipeline_file: str = "", batch: int | None = None) -> RunResult:
    """Run a checked pipeline to the end; the same steps as `civflow run`.

    Against the real API nothing is submitted without consent: pass `yes=True`, or a
    `confirm(plan, estimate)` that returns True; `max_cost` caps the charge. The
    pipeline's run lock is held throughout (RunLocked when another run holds it,
    unless `wait=True`). Files of "cached (remote)" instances are pulled from the
    project's remote first (`on_remote` hears how that went); pushing is left to
    `civflow.remote.push_pipelines` (the CLI's `run --push`). `batch` overrides the
    pipeline's `batch` key, as `run --batch N` does.

        >>> result = await civflow.arun(checked, emulator=True)
        >>> result.files["hero"]
    """
    from civflow.runner import execute, gone_blobs, prepare
    from civflow.runner.connect import open_backend
    from civflow.runner.lock import wait_for_run_lock
    from civflow.runner.state import project_root

    if not emulator and not yes and confirm is None:
        raise SpendingRefused("a run against the real API needs consent",
                              hint="pass yes=True, or confirm=… to be asked with the "
                                   "plan and its estimate")
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 100:
            raise UsageError(f"batch={batch!r}: expected a whole number from 1 to 100")
        checked = dataclasses.replace(
            checked, spec=dataclasses.replace(checked.spec, batch_override=batch))
    options = RunOptions(concurrency=concurrency, max_cost=max_cost, fail_fast=fail_fast,
                         out_dir=out_dir, keep_stale=keep_stale)
    held = await wait_for_run_lock(checked.spec, project_root(checked.spec), wait=wait,
                                   on_wait=on_wait)
    try:
        planned_with = _options(force, reroll, only, retry_failed)

        async def asked(plan: Plan, cost: Estimate) -> bool:
            if yes:
                return True
            assert confirm is not None
            answer = confirm(plan, cost)
            return bool(await answer) if isinstance(answer, Awaitable) else bool(answer)

        async with open_backend(emulator, api_key_file, concurrency=concurrency) as backend:
            # Which API this is decides what counts as done: only its own results are
            # cached (an emulator's picture is a preview, never paid work). A served
            # emulator says so itself, whatever its URL.
            origin = await backend.identify()
            prepared = prepare(checked, planned_with, update_lockfile=update_lockfile,
                               out_dir=out_dir, origin=origin)
            if prepared.resumed is not None and on_resume is not None:
                on_resume(prepared.resumed.run_id)
            await asyncio.to_thread(_pull_cached, prepared, on_remote or (lambda _: None))
            # Paid-for files no copy here can give are asked of Civitai before the plan
            # is shown: those it forgot are planned as work, priced, capped and consented.
            gone = await gone_blobs(prepared, backend)
            if gone:
                prepared = prepare(checked, planned_with, update_lockfile=update_lockfile,
                                   out_dir=out_dir, gone=gone, origin=origin)
            return await execute(prepared, backend, options, reporter=reporter,
                                 confirm=None if emulator else asked,
                                 pipeline_file=pipeline_file)
    finally:
        held.release()


def _pull_cached(prepared: Prepared, tell: Callable[[str], None]) -> None:
    """Pull, many at a time, what the plan's "cached (remote)" instances need; the
    executor then restores their files from the store. A remote that fails leaves
    those files to the blob ids (downloaded again, nothing is submitted)."""
    from civflow.plan import Decision
    from civflow.remote import fetch_objects

    policy = prepared.plan.policy
    wanted: set[str] = set()
    for planned in prepared.plan.instances:
        prior = policy.prior_for(planned.instance)
        if prior is not None and planned.decision is Decision.CACHED:
            wanted.update(prior.remote)
    if not wanted:
        return
    try:
        found = fetch_objects(prepared.root, wanted)
    except RemoteError as exc:
        tell(f"{exc.message}; the files are downloaded again by blob id instead")
        return
    tell(f"pulled {len(found.pulled)} object(s) from the remote")
    if found.corrupt:
        tell(f"{len(found.corrupt)} object(s) on the remote do not match their sha256 and "
             f"were not used ({', '.join(found.corrupt[:3])}); downloaded again by blob id")


def run(checked: Checked, **options: Any) -> RunResult:
    """`arun` from synchronous code: a script, or a notebook cell (whose event loop is
    already running). Same keyword arguments.

        >>> result = civflow.run(checked, emulator=True)
        >>> print(result.table())
    """
    return _sync(arun(checked, **options))


def _sync(work: Awaitable[T]) -> T:
    async def main() -> T:
        return await work

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    return _on_worker(main())


# After an interrupt, how long `run` waits for the work to stop and checkpoint. Stopping
# takes well under a second (cancel, then write the lockfile); this bounds a hung disk.
_STOP_GRACE = 10.0


def _on_worker(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` on a loop of its own in a worker thread, as `run` must inside a
    notebook's running loop. An interrupt of the waiting thread (Ctrl-C, the notebook's
    stop button: a KeyboardInterrupt here) cancels the work at once, so nothing more is
    submitted, and lets it checkpoint before the interrupt goes on."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    task: list[asyncio.Task[T]] = []
    outcome: concurrent.futures.Future[T] = concurrent.futures.Future()

    def target() -> None:
        try:
            task.append(loop.create_task(work))
            started.set()
            outcome.set_result(loop.run_until_complete(task[0]))
        except BaseException as exc:  # the caller re-raises it, whatever it is
            outcome.set_exception(exc)
        finally:
            started.set()
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()

    threading.Thread(target=target, name="civflow-run", daemon=True).start()
    try:
        return outcome.result()
    except KeyboardInterrupt:
        started.wait(_STOP_GRACE)
        if task:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(task[0].cancel)
        with contextlib.suppress(BaseException):
            outcome.result(timeout=_STOP_GRACE)
        raise
