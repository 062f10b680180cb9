"""A real ``mlserver start`` serving a saved Datamint model over V2 REST and gRPC.

The clients here are plain: urllib JSON for REST, grpcio with MLServer's generated dataplane
stubs for gRPC; no datamint code builds a request or reads an answer.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import grpc
import numpy as np
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

from datamint_core import ImageResource, errors, load_model, save_model
from tests.core.sample_models import ThresholdSegmenter
from tests.integration.serving_models import ProbeSegmenter
from tests.mlserver.conftest import start_mlserver

PIXELS = np.linspace(0, 1, 6 * 7, dtype=np.float32).reshape(6, 7)
SPACING = [0.5, 0.7]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlserver")
    model_path = root / "segmenter"
    save_model(ProbeSegmenter(0.4), model_path)  # a ThresholdSegmenter that can be made to fail
    server = start_mlserver(model_path, root / "mlserver.log")
    yield server, model_path
    server.stop()


def _in_process(model_path: Path) -> list:
    resource = ImageResource(PIXELS, id="ct-1", spacing=tuple(SPACING))
    result = load_model(str(model_path)).predict([resource], {})
    return [annotation.to_dict() for annotation in result[0]]


def _rest_body(pixels=PIXELS, **parameters) -> dict:
    return {
        "inputs": [
            {
                "name": "ct-1",
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "data": pixels.ravel().tolist(),
                "parameters": {"kind": "image", "spacing": SPACING, **parameters},
            }
        ]
    }


def _grpc_infer(server, inputs, raw, parameters=None):
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(
            model_name=server.name,
            inputs=inputs,
            raw_input_contents=raw,
            parameters=parameters or {},
        )
        return stub.ModelInfer(request, timeout=60)


def _grpc_input(name="ct-1", shape=PIXELS.shape, kind="image"):
    return pb.ModelInferRequest.InferInputTensor(
        name=name,
        datatype="FP32",
        shape=list(shape),
        parameters={
            "kind": pb.InferParameter(string_param=kind),
            "spacing": pb.InferParameter(string_param=json.dumps(SPACING)),
        },
    )


def _grpc_strings(response) -> list[str]:
    output = response.outputs[0]
    if output.contents.bytes_contents:
        return [item.decode() for item in output.contents.bytes_contents]
    raw, items = response.raw_output_contents[0], []
    while raw:  # the V2 raw BYTES layout: a 4-byte little-endian length before each element
        (length,) = struct.unpack("<I", raw[:4])
        items.append(raw[4 : 4 + length].decode())
        raw = raw[4 + length :]
    return items


def test_rest_and_grpc_answer_the_annotations_of_in_process_predict(served):
    server, model_path = served
    expected = _in_process(model_path)
    assert expected and expected[0]["type"] == "segmentation"

    status, answer = server.infer(_rest_body())
    assert status == 200, answer
    (output,) = answer["outputs"]
    assert output["name"] == "annotations" and output["datatype"] == "BYTES"
    assert output["shape"] == [1]
    assert json.loads(output["data"][0]) == expected

    response = _grpc_infer(server, [_grpc_input()], [PIXELS.astype("<f4").tobytes()])
    assert response.outputs[0].name == "annotations"
    assert [json.loads(item) for item in _grpc_strings(response)] == [expected]


def test_request_parameters_are_the_prediction_params(served):
    server, _ = served
    status, answer = server.infer({**_rest_body(), "parameters": {"mode": "no-such-mode"}})
    assert status == 422, answer
    assert "no-such-mode" in answer["error"]


@pytest.mark.parametrize("error", errors.public_errors(), ids=lambda error: error.__name__)
def test_every_public_error_is_the_v2_status_datamint_serve_answers_it_with(served, error):
    server, _ = served
    parameters = {"mode": "image", "raise_error": error.__name__}

    status, answer = server.infer({**_rest_body(), "parameters": parameters})

    assert status == error.http_status, answer
    raised = f"the probe model raised {error.__name__}"
    if status < 500:
        assert answer["error"] == raised
    else:
        assert answer["error"] == f"The model failed: {error.__name__}: {raised}"


@pytest.mark.parametrize(
    ("body_change", "status", "says"),
    [
        (lambda body: body["inputs"][0].update(shape=[5, 5]), 400, "needs 25"),
        (lambda body: body["inputs"][0].update(datatype="BYTES"), 400, "must be one of"),
        (lambda body: body["inputs"][0]["parameters"].update(kind="spectrum"), 400, "'kind'"),
        (lambda body: body["inputs"][0]["parameters"].update(colour="red"), 400, "accepted"),
        (lambda body: body["inputs"][0]["parameters"].update(spacing=[1, 2, 3]), 422, "spacing"),
        # Built by the wire form, as a JSON request's resource: the same refusal and status.
        (
            lambda body: body["inputs"][0]["parameters"].update(affine=np.eye(4).tolist()),
            422,
            "'affine' describes volumes; resource 'ct-1' is of kind 'image'",
        ),
        (lambda body: body["inputs"][0].update(shape=[2**20, 2**20]), 413, "limit"),
        (lambda body: body.update(inputs=[]), 400, "no inputs"),
    ],
)
def test_bad_rest_input_is_a_v2_error_with_a_message_and_the_server_keeps_serving(
    served, body_change, status, says
):
    server, model_path = served
    body = _rest_body()
    body_change(body)
    got, answer = server.infer(body)
    assert got == status, answer
    assert says in answer["error"]
    got, answer = server.infer(_rest_body())
    assert got == 200 and json.loads(answer["outputs"][0]["data"][0]) == _in_process(model_path)


def test_bad_grpc_input_is_a_status_with_the_message(served):
    server, _ = served
    raw = [PIXELS.astype("<f4").tobytes()]
    with pytest.raises(grpc.RpcError) as raised:
        _grpc_infer(server, [_grpc_input(kind="spectrum")], raw)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'kind'" in raised.value.details() and "image" in raised.value.details()
    # Raw contents that do not fill the shape: MLServer's own decoder refuses them (INTERNAL,
    # saying why) before the runtime runs; the server goes on serving.
    with pytest.raises(grpc.RpcError) as raised:
        _grpc_infer(server, [_grpc_input(shape=(5, 5))], raw)
    assert "buffer" in raised.value.details()
    assert _grpc_strings(_grpc_infer(server, [_grpc_input()], raw))


def test_the_server_slice_limit_applies_to_v2_requests(served):
    server, _ = served
    volume = np.zeros((4097, 2, 2), dtype=np.float32)  # one slice over the default 4096
    body = {
        "inputs": [
            {"name": "long", "shape": list(volume.shape), "datatype": "FP32",
             "data": volume.ravel().tolist(), "parameters": {"kind": "volume"}},
        ],
        "parameters": {"mode": "volume"},
    }  # fmt: skip

    status, answer = server.infer(body)

    assert status == 413, answer
    assert "4097 slices, over the limit of 4096 per request (--max-slices" in json.dumps(answer)


def test_tensor_data_nested_hundreds_deep_is_a_400_saying_to_send_a_flat_list():
    from mlserver.types import RequestInput

    from datamint_core import MalformedRequestError
    from datamint_core.serving.mlserver_runtime import _resource

    data: object = 0.0
    for _ in range(900):  # MLServer's REST parser (orjson) accepts up to 1024 levels
        data = [data]
    request_input = RequestInput(name="ct", shape=[1], datatype="FP32", data=data)

    with pytest.raises(MalformedRequestError) as refused:
        _resource(request_input)

    assert refused.value.http_status == 400
    assert "send a flat list of values" in str(refused.value)


def test_the_server_decode_limit_applies_to_the_inputs_of_a_v2_request_together(tmp_path):
    model_path = tmp_path / "segmenter"
    save_model(ThresholdSegmenter(0.4), model_path)
    # 1 KiB: one 6x7 FP32 input (168 bytes) fits, seven of them (1176 bytes) do not.
    server = start_mlserver(
        model_path, tmp_path / "mlserver.log", DATAMINT_SERVE_MAX_DECODED_BYTES="1K"
    )
    try:
        status, answer = server.infer(_rest_body())
        assert status == 200, answer
        big = np.zeros((20, 20), dtype=np.float32)
        status, answer = server.infer(_rest_body(pixels=big))
        assert status == 413, answer
        assert "over the limit of 1024 decoded bytes" in answer["error"]
        assert "DATAMINT_SERVE_MAX_DECODED_BYTES" in answer["error"]
        body = _rest_body()
        body["inputs"] = [{**body["inputs"][0], "name": f"ct-{i}"} for i in range(7)]
        status, answer = server.infer(body)
        assert status == 413, answer
        assert "after 1008 bytes already" in answer["error"]
    finally:
        server.stop()
