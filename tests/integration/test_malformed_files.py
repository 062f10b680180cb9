"""Malformed medical files through ``datamint predict`` (a real subprocess) and ``datamint
serve`` (a real server): the error a user meets names the attribute that lies and the file,
in one line from the command line and in a 4xx answer from the server, with no server path;
files declaring huge sizes are refused at once, in bounded memory and with no work left
running after the answer.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from datamint_core import save_model
from tests.core import hostile_files
from tests.core.sample_models import ThresholdSegmenter
from tests.integration._server import call, datamint_serve, encode_parts, server_env

pytest.importorskip("pydicom")
pytest.importorskip("nibabel")
pytest.importorskip("PIL")

_IDENTITY = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
#: name: (the lie, the attribute an error must name, the file it must name)
SERIES_LIES = {
    "orientation-nan": ("ImageOrientationPatient", [1.0, 0.0, 0.0, 0.0, float("nan"), 0.0]),
    "orientation-5-values": ("ImageOrientationPatient", [1.0, 0.0, 0.0, 0.0, 1.0]),
    "orientation-parallel": ("ImageOrientationPatient", [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]),
    "position-inf": ("ImagePositionPatient", [0.0, float("inf"), 0.0]),
    "spacing-negative": ("PixelSpacing", [-0.5, 0.0]),
    "position-duplicate": ("ImagePositionPatient", "same"),  # S001 where S000 is
}
FILE_LIES = {
    "frames-400000": ("NumberOfFrames", "frames.dcm"),
    "frames-400000-compressed": ("NumberOfFrames", "rle.dcm"),
    "nifti-short": ("dim", "short.nii"),
    "png-10-gigapixels": ("IHDR", "bomb.png"),
}
CASES = [*SERIES_LIES, *FILE_LIES]
#: Cases whose header declares gigabytes: refused from the header, nothing decoded.
HUGE = ["frames-400000", "frames-400000-compressed", "png-10-gigapixels"]


@pytest.fixture(autouse=True)
def _quiet_readers():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module="pydicom|nibabel")
        yield


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("malformed") / "segmenter"
    save_model(ThresholdSegmenter(threshold=0.5), path)
    return path


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str, str]]:
    """``{case: (path, attribute, file name)}``: a series directory or a single file."""
    root = tmp_path_factory.mktemp("hostile-files")
    cases: dict[str, tuple[Path, str, str]] = {}
    for name, (keyword, value) in SERIES_LIES.items():
        case = hostile_files.SeriesCase(
            orientation=_IDENTITY,
            origin=[-100.0, -120.0, 50.0],
            pixel_spacing=[0.5, 0.5],
            step=1.25,
            slices=3,
            lie=hostile_files.Lie(keyword, "S001.dcm", value),
        )
        hostile_files.write_dicom_series(root / name, case)
        cases[name] = (root / name, keyword, "S001.dcm")
    builders = {
        "frames-400000": lambda path: hostile_files.many_frames_dicom(path),
        "frames-400000-compressed": lambda path: hostile_files.many_frames_dicom(
            path, compressed=True
        ),
        "nifti-short": hostile_files.short_nifti,
        "png-10-gigapixels": lambda path: path.write_bytes(hostile_files.lying_png()),
    }
    for name, (keyword, file_name) in FILE_LIES.items():
        directory = root / name
        directory.mkdir()
        builders[name](directory / file_name)
        cases[name] = (directory / file_name, keyword, file_name)
    return cases


def _datamint(*args: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("datamint")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "datamint_core.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, env=server_env(), timeout=120
    )


@pytest.mark.parametrize("case", CASES)
def test_datamint_predict_exits_with_one_error_line_naming_the_attribute_and_the_file(
    model_path: Path, hostile, tmp_path: Path, case: str
):
    path, keyword, file_name = hostile[case]
    output = tmp_path / "out.json"
    started = time.perf_counter()
    completed = _datamint("predict", "-m", str(model_path), "-i", str(path), "-o", str(output))
    assert completed.returncode in (1, 2), completed
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith("datamint: error: "), lines
    assert keyword in lines[0] and repr(file_name) in lines[0], lines[0]
    assert not output.exists()
    assert time.perf_counter() - started < 60


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory):
    process = datamint_serve(
        model_path,
        tmp_path_factory.mktemp("logs") / "server.log",
        "--max-decoded-bytes",
        "64M",
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def _upload(path: Path) -> tuple[bytes, str]:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    request = {"resources": [{"pixel_data": {"encoding": "multipart", "part": "scan"}}]}
    return encode_parts(
        [
            ("request", None, json.dumps(request).encode(), "application/json"),
            *[("scan", file.name, file.read_bytes(), "application/octet-stream") for file in files],
        ]
    )


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM line")


@pytest.mark.parametrize("case", CASES)
def test_the_server_answers_a_4xx_naming_the_attribute_without_a_server_path(
    server, hostile, case: str
):
    path, keyword, _ = hostile[case]
    body, content_type = _upload(path)
    before = _peak_rss(server.process.pid)
    started = time.perf_counter()
    status, answer = call(server.url + "/invocations", body, content_type, timeout=60)
    answered = time.perf_counter() - started
    cpu_at_answer = _cpu_seconds(server.process.pid)
    assert status == 422, (status, answer)
    assert set(answer) == {"error_code", "message"}
    message = answer["message"]
    assert keyword in message, message
    assert re.search(r"'[^'/]+\.(dcm|nii|png)'", message), message  # a file's name
    assert "/tmp" not in message and "datamint-upload" not in message, message
    assert len(message) < 2000
    if case in HUGE:
        assert answered < 5.0
        time.sleep(1.0)
        assert _cpu_seconds(server.process.pid) - cpu_at_answer < 0.2  # nothing left running
        assert _peak_rss(server.process.pid) - before < 32 * 2**20
    assert call(server.url + "/ping")[0] == 200


def test_a_400_megapixel_png_over_the_servers_budget_is_a_413(server, tmp_path: Path):
    path = tmp_path / "large.png"
    path.write_bytes(hostile_files.large_png())
    before = _peak_rss(server.process.pid)
    status, answer = call(server.url + "/invocations", *_upload(path), timeout=60)
    assert status == 413, answer
    assert "--max-decoded-bytes" in answer["message"]
    assert "/tmp" not in answer["message"] and "DecompressionBomb" not in answer["message"]
    assert _peak_rss(server.process.pid) - before < 32 * 2**20  # refused before decoding


def test_datamint_batch_over_links_to_a_secret_records_errors_without_its_bytes(
    model_path: Path, tmp_path: Path
):
    import pandas as pd

    secret = tmp_path / "credentials"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\napi-token-7f3e\n")
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ["plain", "scan.dcm", "scan.nii", "scan.nii.gz", "scan.png", "scan.npy"]:
        (studies / name).symlink_to(secret)
    output = tmp_path / "out"
    completed = _datamint(
        "batch", "-m", str(model_path), "-i", str(studies), "-o", str(output), "--no-progress"
    )
    assert completed.returncode == 3, completed.stderr  # every row failed, and says why
    rows = pd.read_parquet(output)
    assert sorted(rows["id"]) == sorted(path.name for path in studies.iterdir())
    assert (rows["status"] == "failed").all()
    for error in rows["error"]:
        assert "ResourceError" in error, error
        assert "root:x" not in error and "api-token" not in error and "b'" not in error, error
        assert "credentials" not in error, error  # a link is named by its own name


def _long_series(directory: Path, slices: int) -> None:
    """``slices`` 8x8 slices from CT_small.dcm's header, written fast: one file, then copies
    whose ImagePositionPatient (fixed-width text) is patched in place."""
    import pydicom

    dataset = pydicom.dcmread(hostile_files.pydicom_file("CT_small.dcm"))
    dataset.Rows = dataset.Columns = 8
    dataset.PixelData = bytes(128)
    position = "-100.000\\-120.000\\{:+09.3f}"
    dataset.ImagePositionPatient = position.format(0.0)
    directory.mkdir(parents=True)
    template = directory / "template"
    dataset.save_as(template)
    data = template.read_bytes()
    at = data.index(position.format(0.0).encode())
    for index in range(slices):
        value = position.format(1.25 * index).encode()
        (directory / f"IM{index:05d}.dcm").write_bytes(data[:at] + value + data[at + len(value) :])
    template.unlink()


def test_a_series_read_past_the_request_deadline_is_a_504_and_stops_at_once(
    model_path: Path, tmp_path: Path
):
    series = tmp_path / "allowed" / "long"
    _long_series(series, 5000)  # about 10 CPU-seconds to read on this machine
    process = datamint_serve(
        model_path,
        tmp_path / "server.log",
        "--timeout",
        "1",
        "--allow-path-dir",
        str(series.parent),
    )
    try:
        process.wait_ready()
        started = time.perf_counter()
        status, answer = call(
            process.url + "/invocations",
            {"resources": [{"kind": "volume", "path": str(series)}]},
            timeout=60,
        )
        answered = time.perf_counter() - started
        cpu_at_answer = _cpu_seconds(process.process.pid)
        assert status == 504, (status, answer)
        assert answered < 3.0
        time.sleep(1.5)
        assert _cpu_seconds(process.process.pid) - cpu_at_answer < 0.15  # the read stopped
        assert call(process.url + "/ping")[0] == 200
    finally:
        process.stop()
