"""``datamint serve`` as a real process on 127.0.0.1, called over real HTTP."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from datamint_core import ImageResource, VolumeResource, errors, load_model, save_model
from datamint_core.serving import DatamintBackend
from tests.core.sample_models import phantom_volume
from tests.integration._server import (
    Server,
    call,
    datamint_serve,
    free_port,
    multipart,
    server_env,
)
from tests.integration.serving_models import ProbeSegmenter

TIMEOUT_S = 1.5
MAX_REQUEST_SIZE = 2 * 1024**2


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("served") / "probe-model"
    save_model(ProbeSegmenter(), path)
    return path


@pytest.fixture(scope="module")
def allowed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def server(model_path: Path, allowed_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    process = datamint_serve(
        model_path,
        log,
        "--timeout",
        str(TIMEOUT_S),
        "--max-request-size",
        "2M",
        "--allow-path-dir",
        str(allowed_dir),
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def image_dict(seed: int = 0, size: int = 16) -> dict:
    pixels = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    return ImageResource(pixels, id=f"img-{seed}").to_dict()


def invoke(server: Server, body, content_type: str = "application/json", **kwargs):
    return call(server.url + "/invocations", body, content_type, **kwargs)


def in_process_predictions(model_path: Path, resources: list, params: dict) -> list:
    model = load_model(str(model_path))
    return [[a.to_dict() for a in entry] for entry in model.predict(resources, params)]


# -- the read-only endpoints -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/ping", "/health"])
def test_health_endpoints_answer_200_once_the_model_is_loaded(server, endpoint):
    assert call(server.url + endpoint) == (200, {"status": "ok"})


def test_version_names_the_datamint_and_mlflow_versions(server):
    import mlflow

    from datamint_core import __version__

    assert call(server.url + "/version") == (
        200,
        {"datamint": __version__, "mlflow": mlflow.__version__},
    )


def test_metadata_gives_task_modes_with_their_params_settings_and_annotation_specs(server):
    status, metadata = call(server.url + "/metadata")

    assert status == 200
    assert metadata["task_type"] == "volume_segmentation"
    assert metadata["supported_modes"] == ["image", "frame", "all_frames", "slice", "volume"]
    assert metadata["mode_params"]["slice"] == {
        "params": ["slice_index", "axis"],
        "required": ["slice_index"],
    }
    assert metadata["annotation_specs"] == [{"identifier": "bright", "type": "segmentation"}]
    assert metadata["model_settings"] == {"need_gpu": False}
    assert metadata["linked_models"] == {}


def test_an_unknown_endpoint_gets_a_json_404_listing_the_endpoints(server):
    status, body = call(server.url + "/predict", {"resources": []})

    assert status == 404
    assert body["error_code"] == "NOT_FOUND"
    assert "POST /invocations" in body["message"]


# -- predictions ---------------------------------------------------------------------------------


def test_a_volume_as_base64_npy_and_as_multipart_gives_the_in_process_masks(server, model_path):
    volume = VolumeResource(phantom_volume(), id="ct-1", spacing=(2.5, 0.8, 0.8))
    params = {"mode": "volume"}
    expected = in_process_predictions(model_path, [volume], params)

    inline = invoke(server, {"resources": [volume.to_dict()], "params": params})
    described = {**volume.to_dict(pixel_encoding="none")}
    described["pixel_data"] = {"encoding": "multipart", "part": "ct"}
    npy = io.BytesIO()
    np.save(npy, volume.pixels)
    body, content_type = multipart(
        {
            "request": (
                None,
                json.dumps({"resources": [described], "params": params}).encode(),
                "application/json",
            ),
            "ct": ("ct.npy", npy.getvalue(), "application/octet-stream"),
        }
    )
    uploaded = invoke(server, body, content_type)

    assert inline == (200, {"predictions": expected})
    assert uploaded == (200, {"predictions": expected})
    mask = expected[0][0]["mask"]
    assert mask["shape"] == [12, 32, 32]
    assert "rle" in mask


def test_one_slice_of_a_volume_is_predicted_with_the_mode_params_given(server, model_path):
    volume = VolumeResource(phantom_volume(), id="ct-1")
    params = {"mode": "slice", "slice_index": 6, "axis": "coronal"}

    status, body = invoke(server, {"resources": [volume.to_dict()], "params": params})

    assert status == 200
    assert body["predictions"] == in_process_predictions(model_path, [volume], params)
    assert body["predictions"][0][0]["slice_index"] == 6


@pytest.mark.parametrize(
    "envelope",
    ["inputs", "inputs_single", "instances", "dataframe_records", "dataframe_split"],
)
def test_every_mlflow_json_form_gives_the_same_predictions_as_ours(server, envelope):
    resources = [image_dict(1), image_dict(2)]
    params = {"mode": "image", "confidence_threshold": 0.5}
    ours = invoke(server, {"resources": resources, "params": params})
    bodies = {
        "inputs": {"inputs": resources},
        "inputs_single": {"inputs": resources[0]},
        "instances": {"instances": resources},
        "dataframe_records": {"dataframe_records": resources},
        "dataframe_split": {
            "dataframe_split": {
                "columns": ["kind", "id", "pixel_data"],
                "data": [[r["kind"], r["id"], r["pixel_data"]] for r in resources],
            }
        },
    }

    status, body = invoke(server, {**bodies[envelope], "params": params})

    assert ours[0] == 200
    assert status == 200
    expected = ours[1]["predictions"][:1] if envelope == "inputs_single" else ours[1]["predictions"]
    assert body["predictions"] == expected


def test_a_path_inside_an_allowed_directory_is_read(server, allowed_dir):
    np.save(allowed_dir / "image.npy", np.ones((8, 8), dtype=np.float32))

    status, body = invoke(
        server, {"resources": [{"kind": "image", "path": str(allowed_dir / "image.npy")}]}
    )

    assert status == 200
    assert body["predictions"][0][0]["identifier"] == "bright"


# -- refused requests ----------------------------------------------------------------------------


def test_malformed_json_is_a_400_that_says_the_body_is_not_json(server):
    status, body = invoke(server, b'{"resources": [')

    assert status == 400
    assert body["error_code"] == "MALFORMED_REQUEST"
    assert "not valid JSON" in body["message"]


def test_an_unknown_envelope_is_a_400_listing_the_accepted_keys(server):
    status, body = invoke(server, {"data": [image_dict()]})

    assert status == 400
    assert (
        "'resources', 'inputs', 'instances', 'dataframe_records', 'dataframe_split'"
        in (body["message"])
    )
    assert "found keys ['data']" in body["message"]


def test_an_unknown_mode_is_a_422_listing_the_valid_modes(server):
    status, body = invoke(server, {"resources": [image_dict()], "params": {"mode": "sideways"}})

    assert status == 422
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "Unknown prediction mode 'sideways'" in body["message"]
    assert "'volume'" in body["message"]


def test_a_missing_mode_param_is_a_422_naming_it(server):
    volume = VolumeResource(phantom_volume(), id="ct-1").to_dict()

    status, body = invoke(server, {"resources": [volume], "params": {"mode": "slice"}})

    assert status == 422
    assert "needs the parameter(s) ['slice_index']" in body["message"]


def test_a_mode_the_model_cannot_serve_is_a_422_listing_its_modes(server):
    status, body = invoke(server, {"resources": [image_dict()], "params": {"mode": "interactive"}})

    assert status == 422
    assert body["error_code"] == "UNSUPPORTED_MODE"
    assert (
        "supported modes: ['image', 'frame', 'all_frames', 'slice', 'volume']" in (body["message"])
    )


def test_pixel_data_of_the_wrong_dtype_is_a_422_naming_the_dtype(server):
    resource = {"kind": "image", "pixel_data": {"encoding": "list", "data": [["a", "b"]]}}

    status, body = invoke(server, {"resources": [resource]})

    assert status == 422
    assert body["error_code"] == "INVALID_RESOURCE"
    assert "dtype <U1" in body["message"]
    assert "accepted: a plain numeric or boolean dtype" in body["message"]


def test_an_oversize_body_is_a_413_naming_the_limit(server):
    import socket

    # A client that sends only the head waits for 100 Continue (as curl does before a large
    # body): the server answers from Content-Length alone, at once, and closes. (A client that
    # goes on sending instead reads its 413 after the body is drained: test_server_faults.py.)
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {MAX_REQUEST_SIZE + 1}\r\n\r\n".encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    body = json.loads(payload)

    assert status == 413
    assert body["error_code"] == "REQUEST_TOO_LARGE"
    assert str(MAX_REQUEST_SIZE) in body["message"]


def test_an_oversize_chunked_upload_without_a_length_is_cut_off_with_a_413(server):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    head = b'--b\r\nContent-Disposition: form-data; name="ct"; filename="ct.npy"\r\n\r\n'
    chunks = itertools.chain([head], (b"x" * 65536 for _ in range(MAX_REQUEST_SIZE // 65536 + 2)))
    connection.request(
        "POST",
        "/invocations",
        body=chunks,
        headers={"Content-Type": "multipart/form-data; boundary=b"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    body = json.loads(response.read())
    connection.close()

    assert response.status == 413
    assert body["error_code"] == "REQUEST_TOO_LARGE"


def test_a_body_that_is_neither_json_nor_multipart_is_a_415(server):
    status, body = invoke(server, b"a,b\n1,2\n", content_type="text/csv")

    assert status == 415
    assert (
        "'text/csv' is not accepted; send application/json or multipart/form-data"
        in (body["message"])
    )


def test_a_path_outside_the_allowed_directories_is_a_403_and_is_not_read(server, tmp_path):
    secret = tmp_path / "secret.npy"
    np.save(secret, np.ones((4, 4)))

    status, body = invoke(server, {"resources": [{"kind": "image", "path": str(secret)}]})

    assert status == 403
    assert body["error_code"] == "PATH_NOT_ALLOWED"
    assert "--allow-path-dir" in body["message"]


def test_a_multipart_reference_to_a_missing_part_is_a_400_naming_it(server):
    described = {"kind": "image", "pixel_data": {"encoding": "multipart", "part": "scan"}}
    body, content_type = multipart(
        {
            "request": (None, json.dumps({"resources": [described]}).encode(), "application/json"),
            "other": ("other.npy", b"\x93NUMPY", "application/octet-stream"),
        }
    )

    status, answer = invoke(server, body, content_type)

    assert status == 400
    assert "refers to the multipart part 'scan'" in answer["message"]
    assert "['other']" in answer["message"]


def test_a_multipart_part_that_is_not_npy_is_a_422(server):
    described = {"kind": "image", "pixel_data": {"encoding": "multipart", "part": "scan"}}
    body, content_type = multipart(
        {
            "request": (None, json.dumps({"resources": [described]}).encode(), "application/json"),
            "scan": ("scan.npy", b"not an array", "application/octet-stream"),
        }
    )

    status, answer = invoke(server, body, content_type)

    assert status == 422
    assert "the multipart part 'scan': it is not a .npy file" in answer["message"]


def test_a_model_failure_is_a_500_and_the_next_request_succeeds(server):
    failing = invoke(
        server, {"resources": [image_dict()], "params": {"mode": "image", "fail": True}}
    )
    following = invoke(server, {"resources": [image_dict()], "params": {"mode": "image"}})

    assert failing == (
        500,
        {
            "error_code": "MODEL_ERROR",
            "message": "The model failed: RuntimeError: the probe model was asked to fail",
        },
    )
    assert following[0] == 200


def test_a_model_result_of_the_wrong_length_is_a_500_not_the_clients_fault(server):
    params = {"mode": "image", "drop_results": True}

    status, body = invoke(server, {"resources": [image_dict()], "params": params})

    assert status == 500
    assert body["error_code"] == "MODEL_ERROR"
    assert "returned 0 entries for 1 input(s)" in body["message"]


@pytest.mark.parametrize("error", errors.public_errors(), ids=lambda error: error.__name__)
def test_every_public_error_is_answered_with_the_status_and_code_it_declares(server, error):
    params = {"mode": "image", "raise_error": error.__name__}

    status, body = invoke(server, {"resources": [image_dict()], "params": params})

    assert (status, body["error_code"]) == (error.http_status, error.error_code), body
    raised = f"the probe model raised {error.__name__}"
    if error is errors.RequestDeadlineExceeded:  # the server's own words for its deadline
        assert f"timeout of {TIMEOUT_S:g} s" in body["message"]
    elif status < 500:  # the client's fault: the error's own message
        assert body["message"] == raised
    else:  # the model's or the server's: its type and message, nothing more
        assert body["message"] == f"The model failed: {error.__name__}: {raised}"


def test_a_request_over_the_timeout_is_a_504_and_the_server_keeps_serving(server):
    params = {"mode": "image", "sleep_seconds": TIMEOUT_S + 0.5}

    status, body = invoke(server, {"resources": [image_dict()], "params": params})

    assert status == 504
    assert f"timeout of {TIMEOUT_S:g} s" in body["message"]
    assert call(server.url + "/ping")[0] == 200
    assert invoke(server, {"resources": [image_dict()], "params": {"mode": "image"}})[0] == 200


def test_a_value_error_inside_the_model_is_a_500_not_blamed_on_the_client(server):
    params = {"mode": "image", "own_value_error": True}
    status, body = invoke(server, {"resources": [image_dict()], "params": params})

    assert status == 500
    assert body["error_code"] == "MODEL_ERROR"
    assert "ValueError: operands could not be broadcast together" in body["message"]


def test_requests_whose_timeout_passed_while_queued_are_never_run(server):
    def calls_so_far() -> float:
        params = {"mode": "image", "report_calls": True}
        _, answer = invoke(server, {"resources": [image_dict()], "params": params})
        return answer["predictions"][0][-1]["value"]

    before = calls_so_far()
    params = {"mode": "image", "sleep_seconds": 1.2}
    with ThreadPoolExecutor(4) as pool:
        statuses = sorted(pool.map(
            lambda _: invoke(server, {"resources": [image_dict()], "params": params})[0],
            range(4)))
    time.sleep(1.5)  # let the one that overran its timeout finish

    assert statuses == [200, 504, 504, 504]
    # The first ran in time, the second started in time but overran; the last two were
    # still queued at their deadline and were dropped unrun.
    assert calls_so_far() - before == 3


# -- under load ----------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS line")


def _hammer(server: Server, seconds: float, clients: int = 16) -> tuple[int, list]:
    """``clients`` threads post for ``seconds``; return the number of requests and failures."""
    body = {"resources": [image_dict(3, size=64)], "params": {"mode": "image"}}
    deadline = time.monotonic() + seconds
    failures: list = []
    counts = [0] * clients

    def client(index: int) -> None:
        while time.monotonic() < deadline:
            status, answer = invoke(server, body, timeout=30)
            counts[index] += 1
            if status != 200:
                failures.append((status, answer))

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return sum(counts), failures


def test_sixteen_concurrent_clients_get_no_failure_no_overlap_and_no_memory_growth(server):
    _hammer(server, seconds=1.5)  # warm-up: allocator pools, caches
    rss_before = _rss_kib(server.process.pid)

    requests, failures = _hammer(server, seconds=6.0)

    rss_after = _rss_kib(server.process.pid)
    probe = invoke(
        server,
        {"resources": [image_dict()], "params": {"mode": "image", "report_concurrency": True}},
    )
    assert failures == []
    assert requests > 100
    assert rss_after <= rss_before * 1.10, (rss_before, rss_after)
    max_concurrent = [a for a in probe[1]["predictions"][0] if a["type"] == "numeric"]
    assert max_concurrent[0]["value"] == 1.0  # the lock kept the model single-entry


# -- shutdown ------------------------------------------------------------------------------------


def test_backend_serve_returns_the_process_which_drains_its_request_on_sigterm_and_exits_0(
    model_path, tmp_path, monkeypatch
):
    for key, value in server_env().items():
        monkeypatch.setenv(key, value)
    port = free_port()
    with open(tmp_path / "server.log", "wb") as log:
        process = DatamintBackend({}).serve(
            str(model_path), port, "127.0.0.1", 30, False, synchronous=False, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server.attach(process, port, tmp_path / "server.log")
    try:
        server.wait_ready()
        answers: list = []
        inside = tmp_path / "inside-the-model"
        params = {"mode": "image", "sleep_seconds": 1.0, "started_marker": str(inside)}
        body = {"resources": [image_dict()], "params": params}
        request = threading.Thread(target=lambda: answers.append(invoke(server, body)))
        request.start()
        deadline = time.monotonic() + 20
        while not inside.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        process.terminate()  # the request is in flight, inside the model
        request.join(timeout=20)
        returncode = process.wait(timeout=20)
    finally:
        server.stop()

    assert answers and answers[0][0] == 200
    assert returncode == 0, server.log()
