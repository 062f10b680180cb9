"""``datamint serve`` batching: 16 concurrent clients against a small CNN that declares a batch
size of 8, with and without batching (run with ``-s`` for the throughput figures)."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from datamint_core import ImageResource, ModelSettings, load_model, save_model
from tests.integration._server import datamint_serve, run_concurrently
from tests.mlserver.models import TinyCNN

CLIENTS, REQUESTS_PER_CLIENT, SIDE = 16, 6, 8
SERVER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _image(client: int, request: int) -> np.ndarray:
    return (
        np.random.default_rng(client * 1000 + request)
        .standard_normal((SIDE, SIDE))
        .astype(np.float32)
    )


def _post(url: str, pixels: np.ndarray, name: str) -> tuple[int, dict]:
    buffer = io.BytesIO()
    np.save(buffer, pixels)
    pixel_data = {"encoding": "npy_base64", "data": base64.b64encode(buffer.getvalue()).decode()}
    body = {"resources": [{"id": name, "kind": "image", "pixel_data": pixel_data}]}
    request = urllib.request.Request(
        url + "/invocations", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _run_clients(url: str, bad=None) -> tuple[dict, float]:
    def call(index: int, request: int):
        pixels = _image(index, request)
        if (index, request) == bad:
            pixels[3, 3] = np.nan
        return _post(url, pixels, f"c{index}-r{request}")

    return run_concurrently(call, CLIENTS, REQUESTS_PER_CLIENT)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-batching")
    plain, batched = root / "cnn", root / "cnn-batched"
    save_model(TinyCNN(), plain)
    save_model(TinyCNN(settings=ModelSettings(max_batch_size=8)), batched)
    model = load_model(str(plain))
    expected = {
        (c, r): [
            a.to_dict()
            for a in model.predict([ImageResource(_image(c, r), id=f"c{c}-r{r}")], {})[0]
        ]
        for c in range(CLIENTS)
        for r in range(REQUESTS_PER_CLIENT)
    }
    return root, plain, batched, expected


def test_batched_answers_equal_unbatched_ones_and_throughput_is_reported(models):
    root, plain, batched, expected = models
    rates = {}
    for label, path in (("unbatched", plain), ("batched", batched)):
        server = datamint_serve(path, root / f"{label}.log", **SERVER_ENV)
        try:
            server.wait_ready()
            _run_clients(server.url)  # warm-up
            answers, seconds = _run_clients(server.url)
        finally:
            server.stop()
        assert all(status == 200 for status, _ in answers.values()), answers
        got = {key: answer["predictions"][0] for key, (_, answer) in answers.items()}
        assert got == expected
        rates[label] = CLIENTS * REQUESTS_PER_CLIENT / seconds
    print(
        f"\ndatamint serve, {CLIENTS} clients x {REQUESTS_PER_CLIENT} requests: unbatched "
        f"{rates['unbatched']:.1f} req/s, batched {rates['batched']:.1f} req/s "
        f"(x{rates['batched'] / rates['unbatched']:.2f})"
    )


def test_one_bad_input_among_concurrent_good_ones_fails_alone(models):
    root, _, batched, expected = models
    server = datamint_serve(batched, root / "bad.log", **SERVER_ENV)
    try:
        server.wait_ready()
        answers, _ = _run_clients(server.url, bad=(5, 2))
    finally:
        server.stop()
    status, answer = answers.pop((5, 2))
    assert status == 422 and "NaN" in answer["message"], answer
    assert all(status == 200 for status, _ in answers.values())
    got = {key: answer["predictions"][0] for key, (_, answer) in answers.items()}
    assert got == {key: value for key, value in expected.items() if key != (5, 2)}
