"""Running steps' renderers off the event loop, so that no picture or video holds it up."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

from civflow.emulator import _steps
from civflow.emulator._blobs import BlobStore
from civflow.emulator._fetch import Fetcher, no_fetch
from civflow.emulator._model import Step

# Types whose output is a little text computed from the input alone: rendering them takes
# microseconds, less than handing them to a worker thread and back.
_RENDER_INLINE = frozenset({"echo", "promptEnhancement", "chatCompletion"})


class Renders:
    """Runs step renderers: on the spot for a little text, else on worker threads."""

    def __init__(self, blobs: BlobStore) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="emu-render")
        self._fetcher = Fetcher(blobs)

    def start(self, step: Step, base: str,
              on_done: Callable[[], object]) -> concurrent.futures.Future[_steps.Rendered]:
        """The step's render, begun; a worker thread calls `on_done` when it ends (a render
        on the spot is over on return, and calls nothing)."""
        data, jobs = step.input, [job["id"] for job in step.jobs]
        if step.type in _RENDER_INLINE:
            done: concurrent.futures.Future[_steps.Rendered] = concurrent.futures.Future()
            try:
                done.set_result(_steps.render(step.type, data, jobs, no_fetch))
            except Exception as exc:  # judged when the timer ends, like a worker's failure
                done.set_exception(exc)
            return done
        future = self._pool.submit(_steps.render, step.type, data, jobs,
                                   lambda url: self._fetcher.fetch(url, base))
        future.add_done_callback(lambda _f: on_done())
        return future

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._fetcher.close()
