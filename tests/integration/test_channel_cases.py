"""A 4-channel 3-D model through ``datamint serve`` (four NIfTI parts, one 4-D NIfTI part)
and ``datamint predict`` (four files, one 4-D NIfTI): each answer equals the in-process
prediction. And a series of more than 1000 slices through the server (``--max-parts``)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from datamint_core import load_model, save_model
from datamint_core.cli import main
from datamint_core.io import read, read_case
from datamint_core.serving.payload import predictions_to_json
from tests.core.channel_models import MODALITIES, FourChannelSegmenter, brain_case, write_case
from tests.core.dicom_files import write_series
from tests.core.sample_models import ThresholdSegmenter
from tests.integration._server import call, datamint_serve, encode_parts

nibabel = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")

VOLUME = {"mode": "volume"}
MAX_PARTS = 1200


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("channels") / "four-channel"
    save_model(FourChannelSegmenter(), path)
    return path


@pytest.fixture(scope="module")
def case_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return write_case(tmp_path_factory.mktemp("case"), brain_case(depth=12, size=32, seed=3))


@pytest.fixture(scope="module")
def expected(model_path: Path, case_files: dict) -> list:
    """The in-process prediction, as the server's JSON answer holds it."""
    case = read_case(case_files["channels"])
    result = load_model(str(model_path)).predict([case], VOLUME)
    predictions = json.loads(predictions_to_json(result))["predictions"]
    assert {a["identifier"] for a in predictions[0]} == {"lesion", "score"}
    return predictions


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    process = datamint_serve(model_path, log)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _request(resource: dict) -> tuple[str, None, bytes, str]:
    body = json.dumps({"resources": [resource], "params": VOLUME}).encode()
    return ("request", None, body, "application/json")


def _file_part(name: str, path: str) -> tuple[str, str, bytes, str]:
    return (name, Path(path).name, Path(path).read_bytes(), "application/octet-stream")


def test_four_nifti_parts_are_one_case_and_the_server_answers_the_in_process_prediction(
    server, case_files, expected
):
    resource = {"id": "brats-1", "pixel_data": {"encoding": "multipart", "parts": list(MODALITIES)}}
    parts = [_request(resource)] + [
        _file_part(name, case_files["channels"][name]) for name in MODALITIES
    ]

    status, answer = call(server.url + "/invocations", *encode_parts(parts))

    assert status == 200, answer
    assert answer["predictions"] == expected


def test_a_4d_nifti_in_one_compressed_part_gets_the_same_answer(server, case_files, expected):
    resource = {"id": "brats-1", "pixel_data": {"encoding": "multipart", "part": "case"}}
    parts = [_request(resource), _file_part("case", case_files["four_d"])]

    status, answer = call(server.url + "/invocations", *encode_parts(parts))

    assert status == 200, answer
    assert answer["predictions"] == expected


def test_channel_parts_in_another_order_are_stacked_in_the_order_listed(server, case_files):
    order = ["flair", "t2", "t1c", "t1"]
    resource = {"pixel_data": {"encoding": "multipart", "parts": order}}
    parts = [_request(resource)] + [_file_part(n, case_files["channels"][n]) for n in order]
    case = read_case({name: case_files["channels"][name] for name in order})
    (in_process,) = FourChannelSegmenter().predict([case], VOLUME)

    status, answer = call(server.url + "/invocations", *encode_parts(parts))

    assert status == 200, answer
    assert answer["predictions"][0] == [a.to_dict() for a in in_process]


def test_channel_parts_on_different_grids_get_a_422_naming_the_channel(
    server, case_files, tmp_path
):
    small = tmp_path / "small.nii.gz"
    nibabel.save(nibabel.Nifti1Image(brain_case(depth=4, size=8)[..., 0], np.eye(4)), small)
    resource = {"pixel_data": {"encoding": "multipart", "parts": ["t1", "t2"]}}
    parts = [
        _request(resource),
        _file_part("t1", case_files["channels"]["t1"]),
        _file_part("t2", str(small)),
    ]

    status, answer = call(server.url + "/invocations", *encode_parts(parts))

    assert status == 422 and answer["error_code"] == "INVALID_RESOURCE"
    assert answer["message"].startswith(
        "Input #0: Channel 't2' (small.nii.gz) is a volume of shape (8, 8, 4), but channel "
        "'t1' is a volume of shape (12, 32, 32)"
    )


@pytest.mark.parametrize(
    ("pixel_data", "message"),
    [
        (
            {"encoding": "multipart", "parts": ["t1", "t1"]},
            "Input #0: 'parts' must be a list of distinct part names, one per channel",
        ),
        (
            {"encoding": "multipart", "parts": ["t1", "t9"]},
            "Input #0 refers to the multipart part 't9', which the request does not have",
        ),
        (
            {"encoding": "multipart", "part": "t1", "parts": ["t1"]},
            "Input #0: multipart pixel_data needs exactly one of 'part' (the name of one file "
            "part) or 'parts' (a list of part names, one channel each).",
        ),
    ],
    ids=["repeated", "missing", "both"],
)
def test_malformed_channel_part_lists_get_a_400_saying_what_is_accepted(
    server, case_files, pixel_data, message
):
    parts = [_request({"pixel_data": pixel_data}), _file_part("t1", case_files["channels"]["t1"])]

    status, answer = call(server.url + "/invocations", *encode_parts(parts))

    assert status == 400 and answer["error_code"] == "MALFORMED_REQUEST"
    assert message in answer["message"]


def _predict_json(model_path: Path, tmp_path: Path, *inputs: str) -> list:
    output = tmp_path / "out.json"
    arguments = ["predict", "-m", str(model_path), "-o", str(output), "--mode", "volume"]
    for item in inputs:
        arguments += ["-i", item]
    assert main(arguments) == 0
    return json.loads(output.read_text())["predictions"]


def test_datamint_predict_with_four_files_or_a_4d_nifti_gives_the_in_process_prediction(
    model_path, case_files, expected, tmp_path
):
    channels = [f"{name}={case_files['channels'][name]}" for name in MODALITIES]

    assert _predict_json(model_path, tmp_path, *channels) == expected
    assert _predict_json(model_path, tmp_path, case_files["four_d"]) == expected


def test_datamint_predict_refuses_several_inputs_that_are_not_named_channels(
    model_path, case_files, capsys
):
    code = main(
        ["predict", "-m", str(model_path), "-i", case_files["four_d"], "-i", case_files["four_d"]]
    )

    assert code == 1
    assert "each is one channel of a multi-modal case, given as CHANNEL=PATH" in (
        capsys.readouterr().err
    )


@pytest.fixture(scope="module")
def long_series(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("series") / "long"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_series(directory, 1100, size=8)
    return directory


def test_a_series_of_1100_slices_is_served_within_max_parts_and_more_parts_get_a_413(
    long_series, tmp_path
):
    model_path = tmp_path / "threshold"
    save_model(ThresholdSegmenter(threshold=200.0), model_path)
    files = sorted(long_series.iterdir())
    resource = {"kind": "volume", "pixel_data": {"encoding": "multipart", "part": "ct"}}
    parts = [_request(resource)] + [
        ("ct", path.name, path.read_bytes(), "application/dicom") for path in files
    ]
    too_many = parts + [("ct", f"x{i}.dcm", b"", "application/dicom") for i in range(200)]
    server = datamint_serve(model_path, tmp_path / "log", "--max-parts", str(MAX_PARTS))
    try:
        server.wait_ready()
        status, answer = call(server.url + "/invocations", *encode_parts(parts), timeout=120)
        refused, error = call(server.url + "/invocations", *encode_parts(too_many))
    finally:
        server.stop()

    assert status == 200, answer
    (mask,) = [a for a in answer["predictions"][0] if a["type"] == "segmentation"]
    expected = load_model(str(model_path)).predict([read(long_series)], VOLUME)[0]
    assert answer["predictions"][0] == [a.to_dict() for a in expected]
    assert mask["scope"] == "volume"
    assert refused == 413 and error["error_code"] == "REQUEST_TOO_LARGE"
    assert error["message"].startswith(
        f"The multipart body has more than {MAX_PARTS} parts (files or fields); start the "
        "server with a higher --max-parts"
    )


def test_the_viewer_endpoint_sends_each_channel_windowed_with_its_name(
    server, case_files, expected
):
    import base64

    resource = {"pixel_data": {"encoding": "multipart", "parts": list(MODALITIES)}}
    parts = [_request(resource)] + [
        _file_part(name, case_files["channels"][name]) for name in MODALITIES
    ]

    status, answer = call(server.url + "/viewer/predict", *encode_parts(parts))

    assert status == 200, answer
    assert answer["predictions"] == expected
    image = answer["image"]
    assert image["channel_names"] == list(MODALITIES) and image["channels"] == 4
    frames = np.frombuffer(base64.b64decode(image["data"]), np.uint8).reshape(12, 32, 32, 4)
    assert all(frames[..., c].max() == 255 and frames[..., c].min() == 0 for c in range(4))


def test_the_viewer_page_sends_picked_files_as_channels_and_shows_the_channel_chosen(
    server, case_files
):
    from selenium.webdriver.support.ui import Select

    from tests.integration.test_viewer import canvas_pixels, chromium_driver, wait_for

    browser, profile = chromium_driver()
    try:
        browser.get(server.url + "/")
        wait_for(browser, "ready")
        Select(browser.find_element("id", "mode-select")).select_by_value("volume")
        files = "\n".join(case_files["channels"][name] for name in MODALITIES)
        browser.find_element("id", "file-input").send_keys(files)
        assert browser.find_element("id", "channels-input").is_selected()
        browser.find_element("id", "predict-button").click()
        wait_for(browser, "done")
        assert "2 annotations" in browser.find_element("id", "status").text

        choice = Select(browser.find_element("id", "channel-select"))
        assert [option.text for option in choice.options] == list(MODALITIES)
        assert browser.find_element("id", "channel-controls").is_displayed()
        shown = {}
        for index, name in enumerate(MODALITIES):
            choice.select_by_index(index)
            shown[name] = canvas_pixels(browser)
        assert not np.array_equal(shown["t1"], shown["flair"])
        assert not np.array_equal(shown["t1c"], shown["t2"])
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)
