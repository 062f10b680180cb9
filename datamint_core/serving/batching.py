"""Adaptive batching: concurrent requests coalesced into one ``predict`` call.

A model declares how many inputs it takes at once (``ModelSettings(max_batch_size=8)``). A
:class:`MicroBatcher` collects requests that arrive within ``max_batch_time`` seconds of the
first, up to ``max_batch_size`` resources, runs the model once on all of them, and hands each
request its own slice of the answer. Requests are batched only with requests of the same
params (a batch is one ``predict`` call, which takes one set of params). Each request's
resources are built and checked before it joins a batch; when a batch fails anyway, each of
its requests is run on its own, so that one request's bad input fails that request alone.

Used by the MLServer runtime (:mod:`datamint_core.serving.mlserver_runtime`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from datamint_core.annotations import Annotation
from datamint_core.resources import BaseResource

#: Seconds a batch waits for more requests after its first, by default.
DEFAULT_MAX_BATCH_TIME = 0.01

Predict = Callable[[list[BaseResource], dict[str, Any]], Sequence[Sequence[Annotation]]]


@dataclass
class _Pending:
    resources: list[BaseResource]
    params: dict[str, Any]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Coalesce concurrent ``submit`` calls into batched calls of ``predict``.

    Args:
        predict: runs the model on resources with params (called in a worker thread, one
            call at a time); returns one list of annotations per resource.
        max_batch_size: the most resources one call takes (at least 1).
        max_batch_time: seconds a batch waits for more requests after its first.
        on_batch: called with the number of requests and of resources of each model call
            (a metric, a log line).

    Raises:
        ValueError: ``max_batch_size`` below 1 or a negative ``max_batch_time``.
    """

    def __init__(
        self,
        predict: Predict,
        max_batch_size: int,
        max_batch_time: float = DEFAULT_MAX_BATCH_TIME,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        if (
            not isinstance(max_batch_size, int)
            or isinstance(max_batch_size, bool)
            or max_batch_size < 1
        ):
            raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}.")
        if not isinstance(max_batch_time, (int, float)) or max_batch_time < 0:
            raise ValueError(f"max_batch_time must be seconds >= 0, got {max_batch_time!r}.")
        self._predict = predict
        # Its own thread: callers blocked in the loop's default executor (datamint serve's
        # request threads) must not starve the batch they wait for.
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "datamint-batch")
        self._on_batch = on_batch
        self.max_batch_size = max_batch_size
        self.max_batch_time = float(max_batch_time)
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._closed = False
        #: How many model calls ran, and how many requests they answered (for tests, metrics).
        self.calls = 0
        self.requests = 0

    async def submit(
        self, resources: list[BaseResource], params: dict[str, Any]
    ) -> list[list[Annotation]]:
        """Predict ``resources`` with ``params``, batched with concurrent requests.

        Raises:
            Exception: whatever ``predict`` raised for this request run on its own.
        """
        return (await self.submit_counted(resources, params))[0]

    async def submit_counted(
        self, resources: list[BaseResource], params: dict[str, Any]
    ) -> tuple[list[list[Annotation]], int]:
        """:meth:`submit`, and how many requests shared the ``predict`` call that answered.

        Raises:
            RuntimeError: the batcher was closed.
        """
        if self._closed:
            raise RuntimeError("The micro-batcher is closed; it takes no more requests.")
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(list(resources), dict(params), future))
        return await future

    async def close(self) -> None:
        """Stop the batching task and its thread; requests still queued are cancelled, the
        model call running (if any) finishes in the background. Takes no request after."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        if self._queue is not None:
            while not self._queue.empty():
                self._queue.get_nowait().future.cancel()
            self._queue = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> None:
        # One model call at a time; while it runs, the next batch keeps filling (past
        # max_batch_time), so that a busy model gets full batches.
        assert self._queue is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        idle = asyncio.Event()
        idle.set()
        held: _Pending | None = None
        while True:
            first = held or await queue.get()
            held = None
            batch, size, key = [first], len(first.resources), _params_key(first.params)
            deadline = loop.time() + self.max_batch_time
            while size < self.max_batch_size:
                item = await _next(queue, idle, deadline - loop.time())
                if item is None:
                    break
                if (
                    _params_key(item.params) != key
                    or size + len(item.resources) > self.max_batch_size
                ):
                    held = item  # starts the next batch
                    break
                batch.append(item)
                size += len(item.resources)
            await idle.wait()
            idle.clear()
            task = loop.create_task(self._answer(batch))
            task.add_done_callback(lambda _: idle.set())

    async def _answer(self, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.cancelled()]
        if not live:
            return
        resources = [resource for item in live for resource in item.resources]
        if self._on_batch is not None:
            self._on_batch(len(live), len(resources))
        try:
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self._executor, self._call, resources, live[0].params
            )
            self.requests += len(live)
            if len(result) != len(resources):
                raise ValueError(
                    f"the model returned {len(result)} results for {len(resources)} inputs"
                )
        except Exception as error:
            if len(live) == 1:
                _settle(live[0].future, error=error)
                return
            for item in live:  # one request's bad input fails that request alone
                await self._answer([item])
            return
        start = 0
        for item in live:
            end = start + len(item.resources)
            _settle(item.future, result=([list(e) for e in result[start:end]], len(live)))
            start = end

    def _call(self, resources: list[BaseResource], params: dict[str, Any]) -> Sequence[Any]:
        self.calls += 1
        return self._predict(resources, params)


async def _next(
    queue: asyncio.Queue[_Pending], idle: asyncio.Event, remaining: float
) -> _Pending | None:
    """The next queued request; None once ``remaining`` seconds passed and the model is idle."""
    if not queue.empty():
        return queue.get_nowait()
    getting = asyncio.ensure_future(queue.get())
    waits = {getting} if remaining > 0 or not idle.is_set() else set()
    if not waits:
        getting.cancel()
        return None
    idling = None
    if remaining <= 0:  # past the batch time: wait for more only while the model is busy
        idling = asyncio.ensure_future(idle.wait())
        waits.add(idling)
    await asyncio.wait(
        waits, timeout=remaining if remaining > 0 else None, return_when=asyncio.FIRST_COMPLETED
    )
    if idling is not None:
        idling.cancel()
    if getting.done() or not getting.cancel():  # got an item (cancelling keeps it queued)
        return getting.result()
    if remaining > 0 and not idle.is_set():  # batch time over, model still busy: keep filling
        return await _next(queue, idle, 0)
    return None


def _settle(future: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=repr)


__all__ = ["DEFAULT_MAX_BATCH_TIME", "MicroBatcher"]
