"""Adaptive batching through a real ``mlserver start``: 16 concurrent clients against a small
CNN that declares a batch size of 8, served with and without batching.

Run with ``-s`` to see the throughput figures.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamint_core import ImageResource, ModelSettings, load_model, save_model
from tests.integration._server import run_concurrently
from tests.mlserver.conftest import start_mlserver
from tests.mlserver.models import TinyCNN

CLIENTS = 16
REQUESTS_PER_CLIENT = 6
SIDE = 8
#: One BLAS thread: on a shared 2-core machine threaded BLAS calls stall each other.
SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _image(client: int, request: int) -> np.ndarray:
    rng = np.random.default_rng(client * 1000 + request)
    return rng.standard_normal((SIDE, SIDE)).astype(np.float32)


def _body(pixels: np.ndarray, name: str) -> dict:
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "data": [None if np.isnan(v) else float(v) for v in pixels.ravel()]
                if np.isnan(pixels).any()
                else pixels.ravel().tolist(),
                "parameters": {"kind": "image"},
            }
        ]
    }


def _run_clients(server, bad: tuple[int, int] | None = None) -> tuple[dict, float]:
    def call(index: int, request: int):
        pixels = _image(index, request)
        if (index, request) == bad:
            pixels[3, 3] = np.nan
        return server.infer(_body(pixels, f"c{index}-r{request}"))

    return run_concurrently(call, CLIENTS, REQUESTS_PER_CLIENT)


def _shared(answers: dict) -> float:
    """Mean number of requests per predict call, as the responses report it."""
    counts = [
        answer["parameters"]["datamint_batch_requests"]
        for _, answer in answers.values()
        if "parameters" in answer
    ]
    return sum(counts) / len(counts)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    plain, batched = root / "cnn", root / "cnn-batched"
    save_model(TinyCNN(), plain)
    save_model(TinyCNN(settings=ModelSettings(max_batch_size=8)), batched)
    return root, plain, batched


def _expected(model_path) -> dict:
    model = load_model(str(model_path))
    expected = {}
    for client in range(CLIENTS):
        for request in range(REQUESTS_PER_CLIENT):
            resource = ImageResource(_image(client, request), id=f"c{client}-r{request}")
            (entry,) = model.predict([resource], {})  # one at a time: the unbatched answer
            expected[client, request] = [annotation.to_dict() for annotation in entry]
    return expected


def _annotations(answer: dict) -> list:
    return json.loads(answer["outputs"][0]["data"][0])


def test_batched_answers_equal_unbatched_ones_and_throughput_rises(models):
    root, plain, batched = models
    expected = _expected(plain)
    timings = {}
    for label, path in (("unbatched", plain), ("batched", batched)):
        server = start_mlserver(path, root / f"{label}.log", **SERVER_ENV)
        try:
            _run_clients(server)  # warm-up
            answers, seconds = _run_clients(server)
            shared = _shared(answers)
        finally:
            server.stop()
        assert all(status == 200 for status, _ in answers.values()), answers
        assert {key: _annotations(answer) for key, (_, answer) in answers.items()} == expected
        timings[label] = CLIENTS * REQUESTS_PER_CLIENT / seconds
        if label == "unbatched":
            assert shared == 1

    ratio = timings["batched"] / timings["unbatched"]
    print(
        f"\n{CLIENTS} clients x {REQUESTS_PER_CLIENT} requests, {SIDE}x{SIDE} images: "
        f"unbatched {timings['unbatched']:.1f} req/s, batched {timings['batched']:.1f} req/s "
        f"(x{ratio:.2f}); {shared:.2f} requests per predict call"
    )
    assert shared > 1.5  # requests were really coalesced


def test_one_bad_input_among_concurrent_good_ones_fails_alone(models):
    root, plain, batched = models
    expected = _expected(plain)
    server = start_mlserver(batched, root / "bad.log", **SERVER_ENV)
    try:
        answers, _ = _run_clients(server, bad=(5, 2))
    finally:
        server.stop()
    status, answer = answers.pop((5, 2))
    assert status == 422, answer
    assert "NaN" in answer["error"]
    assert all(status == 200 for status, _ in answers.values())
    assert {key: _annotations(answer) for key, (_, answer) in answers.items()} == {
        key: value for key, value in expected.items() if key != (5, 2)
    }
    assert _shared(answers) > 1.5
