"""Awaits with a hard upper bound, even when the awaited code loses a cancellation.

On Python 3.11, ``asyncio.wait_for`` returns the inner result instead of raising when a
cancel arrives in the same loop iteration as the inner future completes (bpo-42130), and
on its own timeout it cancels the inner task and then waits for it without limit. redis-py
wraps every command send in ``wait_for`` when ``socket_timeout`` is set, so a single
``task.cancel()`` followed by ``await task`` can wait forever. These helpers never ``await``
a task directly: they use ``asyncio.wait`` (which never cancels and always honours its
timeout) and cancel again until the task ends or the budget is spent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
_RECANCEL_S = 0.05


async def stop_task(task: asyncio.Task[Any], timeout_s: float, what: str) -> bool:
    """Cancel ``task`` (repeatedly) and wait at most ``timeout_s`` for it to end.

    True when it ended; False when it was abandoned (logged)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("%s did not stop within %.1fs; abandoned", what, timeout_s)
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(_RECANCEL_S, remaining))
    if not task.cancelled() and task.exception() is not None:
        log.debug("%s ended with %s", what, type(task.exception()).__name__)
    return True


async def bounded(aw: Awaitable[T], timeout_s: float, what: str) -> T:
    """``await aw`` for at most ``timeout_s`` (then TimeoutError) in its own task."""
    task: asyncio.Task[T] = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        await stop_task(task, 1.0, what)
        raise
    if not done:
        await stop_task(task, 1.0, what)
        raise TimeoutError(f"{what} did not finish within {timeout_s:.1f}s")
    return task.result()


class BackgroundTask:
    """One named background loop: started once, stopped with :func:`stop_task`'s bound."""

    def __init__(self, name: str, what: str, stop_timeout_s: float) -> None:
        self.name, self.what, self.stop_timeout_s = name, what, stop_timeout_s
        self.task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def start(self, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self.task is None:
            self.task = asyncio.create_task(loop(), name=self.name)

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            await stop_task(task, self.stop_timeout_s, self.what)
