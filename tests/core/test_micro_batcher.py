"""The micro-batcher in process: coalescing, splitting, params kept apart, failures isolated."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from datamint_core import CategoryAnnotation, ImageResource, InvalidRequestError
from datamint_core.serving.batching import MicroBatcher


def _predict_log():
    calls: list[tuple[list[str], dict]] = []
    lock = threading.Lock()

    def predict(resources, params):
        with lock:
            calls.append(([r.id for r in resources], dict(params)))
        if any(r.id.startswith("bad") for r in resources):
            raise InvalidRequestError("a bad resource: " + ",".join(r.id for r in resources))
        return [[CategoryAnnotation("id", r.id, confidence=1.0)] for r in resources]

    return predict, calls


def _resource(name: str) -> ImageResource:
    return ImageResource(np.zeros((2, 2), np.float32), id=name)


async def _gather(batcher, requests):
    return await asyncio.gather(
        *[batcher.submit_counted([_resource(n) for n in names], p) for names, p in requests],
        return_exceptions=True,
    )


def test_concurrent_requests_share_calls_and_get_their_own_answers():
    predict, calls = _predict_log()
    batcher = MicroBatcher(predict, max_batch_size=4, max_batch_time=0.05)
    requests = [([f"r{i}"], {}) for i in range(8)]
    results = asyncio.run(_gather(batcher, requests))
    for (names, _), (answer, shared) in zip(requests, results, strict=True):
        assert [[a.value for a in entry] for entry in answer] == [names]
        assert shared > 1
    assert len(calls) < 8 and all(len(ids) <= 4 for ids, _ in calls)


def test_requests_with_other_params_are_never_in_one_call():
    predict, calls = _predict_log()
    batcher = MicroBatcher(predict, max_batch_size=8, max_batch_time=0.05)
    requests = [([f"a{i}"], {"mode": "image"}) for i in range(3)]
    requests += [([f"b{i}"], {"mode": "slice"}) for i in range(3)]
    asyncio.run(_gather(batcher, requests))
    for ids, params in calls:
        assert {name[0] for name in ids} == {"a" if params["mode"] == "image" else "b"}


def test_one_bad_request_fails_alone_and_the_others_are_answered():
    predict, _ = _predict_log()
    batcher = MicroBatcher(predict, max_batch_size=8, max_batch_time=0.05)
    requests = [(["r0"], {}), (["bad1"], {}), (["r2", "r3"], {})]
    good0, bad, good2 = asyncio.run(_gather(batcher, requests))
    assert isinstance(bad, InvalidRequestError) and "bad1" in str(bad)
    assert "r0" not in str(bad)  # retried alone: its error names only itself
    assert [[a.value for a in e] for e in good0[0]] == [["r0"]]
    assert [[a.value for a in e] for e in good2[0]] == [["r2"], ["r3"]]


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_a_batch_size_below_one_is_refused(size):
    with pytest.raises(ValueError, match="max_batch_size must be an integer >= 1"):
        MicroBatcher(lambda r, p: [], size)


def test_a_negative_batch_time_is_refused():
    with pytest.raises(ValueError, match="max_batch_time must be seconds >= 0"):
        MicroBatcher(lambda r, p: [], 4, -0.1)


def _batch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("datamint-batch")]


def test_close_ends_the_batch_thread_and_refuses_later_requests():
    predict, _ = _predict_log()
    before = set(_batch_threads())
    batcher = MicroBatcher(predict, max_batch_size=4, max_batch_time=0.01)

    async def use_then_close():
        await _gather(batcher, [(["r0"], {})])
        assert set(_batch_threads()) - before  # the model call ran on the batcher's thread
        await batcher.close()
        with pytest.raises(RuntimeError, match="closed"):
            await batcher.submit([_resource("late")], {})

    asyncio.run(use_then_close())
    for thread in set(_batch_threads()) - before:
        thread.join(timeout=5)
    assert not set(_batch_threads()) - before
