"""The scoring server's worker threads: where each request is decoded and predicted.

``loop.run_in_executor`` hands work over through a ``concurrent.futures`` future chained to
an asyncio one, the executor's locks and a work item; for a small request that hand-off
costs as much CPU as all of FastAPI's routing. :class:`RequestThreads` hands the function
to a thread through one queue and the answer back with one ``call_soon_threadsafe``,
nothing else, at a third of the cost.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = None


class RequestThreads:
    """A fixed set of daemon threads running functions for coroutines of one event loop.

    Args:
        loop: the event loop whose futures the answers settle.
        count: the threads; by default as many as asyncio's default executor has
            (``min(32, CPUs + 4)``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int | None = None) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        count = count or min(32, (os.cpu_count() or 1) + 4)
        self._threads = [
            threading.Thread(target=self._work, name=f"datamint-request-{n}", daemon=True)
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def run(self, function: Callable[..., Any], *args: Any) -> asyncio.Future:
        """Run ``function(*args)`` on a thread, in a copy of the caller's context (its
        request limits and deadline); await the returned future for its result or error.
        Cancelling the future does not stop the function: it runs to its end, unheard."""
        future = self._loop.create_future()
        self._queue.put((contextvars.copy_context(), function, args, future))
        return future

    def close(self) -> None:
        """Let the threads end once the work queued before has run."""
        for _ in self._threads:
            self._queue.put(_STOP)

    def _work(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            context, function, args, future = item
            try:
                result, error = context.run(function, *args), None
            except BaseException as raised:  # handed to the awaiting coroutine
                result, error = None, raised
            try:
                self._loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # the loop closed while this ran: nobody waits for it
                pass
            del item, context, future, result, error


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled: the request timed out meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
