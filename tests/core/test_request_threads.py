"""The scoring server's worker threads: context, answers, errors, cancellation, closing."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from datamint_core.serving._threads import RequestThreads

_REQUEST = contextvars.ContextVar("request", default="none")


def _threads_named() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("datamint-request-")}


def test_work_runs_off_the_loop_in_the_callers_context_and_errors_reach_the_caller():
    before = _threads_named()

    async def main():
        threads = RequestThreads(asyncio.get_running_loop(), count=2)
        _REQUEST.set("r1")
        seen = await threads.run(lambda: (_REQUEST.get(), threading.current_thread().name))
        assert seen[0] == "r1" and seen[1].startswith("datamint-request-")

        def fail():
            raise ValueError("bad pixels")

        with pytest.raises(ValueError, match="bad pixels"):
            await threads.run(fail)
        # A request that timed out: its future is cancelled, the work ends unheard, and the
        # threads go on serving.
        slow = threads.run(time.sleep, 0.2)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(slow, 0.01)
        assert await threads.run(sum, [1, 2, 3]) == 6
        threads.close()

    asyncio.run(main())
    for thread in _threads_named() - before:
        thread.join(timeout=5)
    assert not _threads_named() - before
