"""Hostile input against a real ``datamint serve``: property tests over every pixel encoding
and every request envelope.

The invariant, for every generated request: a 4xx JSON error (``error_code`` and
``message``, no stack trace) or a valid prediction; never a 500, and the server's peak
memory grows by less than a small multiple of ``--max-decoded-bytes``.
"""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamint_core import VolumeResource, save_model
from tests.core.sample_models import phantom_volume
from tests.integration import hostile
from tests.integration._server import Server, call, datamint_serve, multipart
from tests.integration.serving_models import ChannelThresholdSegmenter

MAX_DECODED = 8 * 1024**2
#: Peak-memory growth allowed over a whole property test: a few decode budgets, never the
#: hundreds of MB the lying headers declare.
PEAK_GROWTH_LIMIT = 6 * MAX_DECODED
ENVELOPES = ["resources", "inputs", "instances", "dataframe_records", "dataframe_split"]
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def allowed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, allowed_dir: Path):
    model_path = tmp_path_factory.mktemp("hostile") / "threshold"  # any image, any channels
    save_model(ChannelThresholdSegmenter(), model_path)
    process = datamint_serve(
        model_path,
        tmp_path_factory.mktemp("logs") / "server.log",
        "--max-decoded-bytes", "8M",
        "--max-request-size", "4M",
        "--max-slices", "64",
        "--allow-path-dir", str(allowed_dir),
    )  # fmt: skip
    try:
        process.wait_ready()
        volume = {"resources": [_volume_record()], "params": {"mode": "volume"}}
        assert call(process.url + "/invocations", volume)[0] == 200  # warm: imports, pools
        yield process
    finally:
        process.stop()


def _volume_record() -> dict:
    return VolumeResource(phantom_volume()[:4, :16, :16].copy(), id="ct").to_dict()


def _peak_rss_bytes(server: Server) -> int:
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


def assert_client_error_or_prediction(status: int, answer: dict, server: Server) -> None:
    if status == 200:
        assert set(answer) == {"predictions"}, answer
        return
    assert 400 <= status < 500, (status, answer, server.log())
    assert set(answer) == {"error_code", "message"}, answer
    assert "Traceback" not in answer["message"] and 'File "' not in answer["message"]


def post(server: Server, body, content_type: str = "application/json") -> tuple[int, dict]:
    return call(server.url + "/invocations", body, content_type, timeout=60)


@pytest.fixture
def peak_memory_guard(server: Server):
    before = _peak_rss_bytes(server)
    yield
    grown = _peak_rss_bytes(server) - before
    assert grown < PEAK_GROWTH_LIMIT, f"peak RSS grew by {grown / 2**20:.1f} MiB"
    assert call(server.url + "/ping")[0] == 200


# -- every pixel encoding ----------------------------------------------------------------------


def test_base64_npy_pixels_of_any_shape_get_a_4xx_or_a_prediction(server, peak_memory_guard):
    @PROPERTY
    @given(pixel_data=hostile.base64_pixel_data(), fields=hostile.resource_fields())
    def check(pixel_data, fields):
        fields.pop("path", None)
        body = {"resources": [{**fields, "pixel_data": pixel_data}], "params": {}}
        assert_client_error_or_prediction(*post(server, body), server)

    check()


def test_inline_list_pixels_of_any_values_and_dtype_get_a_4xx_or_a_prediction(
    server, peak_memory_guard
):
    @PROPERTY
    @given(pixel_data=hostile.list_pixel_data(), kind=st.sampled_from([None, "image", "volume"]))
    def check(pixel_data, kind):
        resource = {"pixel_data": pixel_data} | ({"kind": kind} if kind else {})
        assert_client_error_or_prediction(*post(server, {"resources": [resource]}), server)

    check()


def test_multipart_npy_and_npz_parts_get_a_4xx_or_a_prediction(server, peak_memory_guard):
    @PROPERTY
    @given(file=hostile.pixel_file_bytes(), name=st.sampled_from(["ct", "other"]))
    def check(file, name):
        _, content = file
        request = {"resources": [{"pixel_data": {"encoding": "multipart", "part": "ct"}}]}
        body, content_type = multipart(
            {
                "request": (None, hostile.to_json(request), "application/json"),
                name: ("scan.bin", content, "application/octet-stream"),
            }
        )
        assert_client_error_or_prediction(*post(server, body, content_type), server)

    check()


def test_local_npy_and_npz_files_named_by_path_get_a_4xx_or_a_prediction(
    server, allowed_dir, peak_memory_guard
):
    @PROPERTY
    @given(file=hostile.pixel_file_bytes(), kind=st.sampled_from(["image", "volume"]))
    def check(file, kind):
        suffix, content = file
        path = allowed_dir / f"{uuid.uuid4().hex}{suffix}"
        path.write_bytes(content)
        try:
            body = {"resources": [{"kind": kind, "path": str(path)}]}
            assert_client_error_or_prediction(*post(server, body), server)
        finally:
            path.unlink()

    check()


def test_a_157_byte_request_declaring_800_mb_is_a_413_and_allocates_nothing(
    server, peak_memory_guard
):
    header = hostile.npy_header("<f8", False, (10_000, 10_000)).encode()
    npy = hostile.NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header
    pixel_data = {"encoding": "npy_base64", "data": base64.b64encode(npy).decode()}
    body = hostile.to_json({"resources": [{"pixel_data": pixel_data}]})

    status, answer = post(server, body)

    assert len(body) < 200
    assert status == 413, answer
    assert answer["error_code"] == "INPUT_TOO_LARGE"
    assert "800000000 bytes" in answer["message"]
    assert "--max-decoded-bytes" in answer["message"]


@pytest.mark.parametrize(
    ("descr", "shape"), [("(6000,6000)f8", (1,)), ("|O", (2,)), ("<c16", (2,)), ("<M8[s]", (2,))]
)
def test_sub_array_object_complex_and_datetime_dtypes_are_a_422_naming_what_is_accepted(
    server, descr, shape
):
    header = hostile.npy_header(descr, False, shape).encode()
    npy = hostile.NPY_MAGIC + b"\x01\x00" + len(header).to_bytes(2, "little") + header + bytes(64)
    data = base64.b64encode(npy).decode()

    status, answer = post(server, {"resources": [{"pixel_data": {"encoding": "npy_base64",
                                                                 "data": data}}]})  # fmt: skip

    assert status == 422, answer
    assert "accepted: a plain numeric or boolean dtype" in answer["message"] or (
        "pickled Python objects" in answer["message"]
    )


def test_list_values_out_of_range_for_their_dtype_are_a_422_naming_the_range(server):
    resource = {"pixel_data": {"encoding": "list", "data": [[1, 2], [3, 300]], "dtype": "uint8"}}

    status, answer = post(server, {"resources": [resource]})

    assert status == 422
    assert "accepted: integers from 0 to 255" in answer["message"]


# -- every envelope ----------------------------------------------------------------------------


def test_any_json_in_any_envelope_gets_a_4xx_or_a_prediction(server, peak_memory_guard):
    forms = st.sampled_from([*ENVELOPES, "params", "nonsense"])

    @PROPERTY
    @given(form=forms, payload=hostile.JSON_VALUES, params=hostile.JSON_VALUES)
    def check(form, payload, params):
        assert_client_error_or_prediction(*post(server, {form: payload, "params": params}), server)

    check()


def test_resources_of_any_fields_in_every_envelope_get_a_4xx_or_a_prediction(
    server, peak_memory_guard
):
    @PROPERTY
    @given(
        records=st.lists(
            st.one_of(
                hostile.resource_fields(),
                st.just(_volume_record()),
                hostile.JSON_VALUES,
            ),
            max_size=3,
        ),
        params=hostile.PARAMS,
        form=st.sampled_from(ENVELOPES),
    )
    def check(records, params, form):
        body = hostile.envelope(records, params, form)
        assert_client_error_or_prediction(*post(server, body), server)

    check()


def test_params_of_any_type_on_a_valid_volume_get_a_4xx_or_a_prediction(server):
    @PROPERTY
    @given(params=hostile.PARAMS)
    def check(params):
        status, answer = post(server, {"resources": [_volume_record()], "params": params})
        assert_client_error_or_prediction(status, answer, server)

    check()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"mode": "slice", "slice_index": 1, "axis": "sideways"},
         "Param 'axis'='sideways' is not valid; accepted: ['axial', 'coronal', 'sagittal']"),
        ({"mode": "slice", "slice_index": 1.5},
         "Param 'slice_index'=1.5 is not valid; accepted: a non-negative integer"),
        ({"mode": "slice", "slice_index": "2"},
         "Param 'slice_index'='2' is not valid; accepted: a non-negative integer"),
        ({"mode": "slice", "slice_index": True},
         "Param 'slice_index'=True is not valid; accepted: a non-negative integer"),
        ({"mode": "slice", "slice_index": 99},
         "slice_index=99 is outside VolumeResource 'ct' (4 axial slices); accepted: an integer "
         "from 0 to 3"),
        ({"mode": ["slice"]}, "Param 'mode'=['slice'] is not valid; accepted: a mode name"),
    ],
)  # fmt: skip
def test_a_param_of_the_wrong_type_or_value_is_a_422_naming_it_and_what_is_accepted(
    server, params, message
):
    status, answer = post(server, {"resources": [_volume_record()], "params": params})

    assert status == 422, answer
    assert message in answer["message"]


@pytest.mark.parametrize("depth", [33, 500, 5000, 100_000])
def test_json_nested_beyond_the_limit_is_a_400(server, depth):
    status, answer = post(server, hostile.deeply_nested(depth))

    assert status == 400, answer
    assert "nests deeper than 32 levels" in answer["message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dataframe_split": {"columns": 5, "data": [[1]]}}, "'columns' (a list of distinct"),
        ({"dataframe_split": {"columns": ["a", "a"], "data": []}}, "'columns' (a list of distinct"),
        ({"dataframe_split": {"columns": ["path"], "data": [[1, 2]]}}, "rows of 1 values"),
        ({"dataframe_split": [1, 2]}, "'columns' (a list of distinct"),
        ({"dataframe_records": [1, 2]}, "'dataframe_records' entry #0 must be a resource object"),
        ({"instances": "abc"}, "'instances' must be a list of resource objects; got a string"),
        ({"resources": [{"path": "/a\x00b.npy", "kind": "image"}]}, "without NUL bytes"),
        ({"resources": [{"path": ["x"], "kind": "image"}]}, "got a list"),
        ({"resources": [], "params": [1]}, "'params' must be a JSON object; got a list"),
    ],
)
def test_envelopes_of_the_wrong_shape_and_bad_paths_are_a_400_saying_what_is_accepted(
    server, body, message
):
    status, answer = post(server, body)

    assert (status, answer["error_code"]) == (400, "MALFORMED_REQUEST"), answer
    assert message in answer["message"]


def test_more_slices_than_the_limit_is_a_413_naming_the_flag(server):
    volume = VolumeResource(np.zeros((65, 4, 4), np.float32), id="tall").to_dict()

    status, answer = post(server, {"resources": [volume], "params": {"mode": "volume"}})

    assert status == 413, answer
    assert "65 slices, over the limit of 64 per request (--max-slices" in answer["message"]


def test_several_arrays_share_one_decode_budget(server):
    array = np.zeros((1024, 1024), np.float32)  # 4 MiB each: two fit in 8M, three do not
    names = [f"part{i}" for i in range(3)]
    request = {"resources": [{"pixel_data": {"encoding": "multipart", "part": n}} for n in names]}
    fields = {"request": (None, hostile.to_json(request), "application/json")}
    for name in names:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, pixels=array)  # a few KB on the wire
        fields[name] = (f"{name}.npz", buffer.getvalue(), "application/octet-stream")

    status, answer = post(server, *multipart(fields))

    assert status == 413, answer
    assert "after 8388608 bytes already" in answer["message"]


def test_only_the_documented_endpoints_answer(server):
    for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
        status, answer = call(server.url + path)
        assert status == 404, path
        assert answer["message"].endswith(
            "Endpoints: GET /ping; GET /health; GET /version; GET /metadata; POST /invocations; "
            "GET /; GET /static/{name}; POST /viewer/predict."
        )
