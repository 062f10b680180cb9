"""Limits belong to the wire: a user's own large data runs in their own process, the CLI and
batch jobs, while ``datamint serve`` still refuses the same data from a client (413)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datamint_core import InputTooLargeError, VolumeResource, request_limits, save_model
from tests.integration._server import call, datamint_serve, server_env
from tests.integration.wire_models import SliceMeans

#: Server limits set in the environment: they configure servers, never a user's process.
SERVER_LIMITS_ENV = {"DATAMINT_SERVE_MAX_SLICES": "64", "DATAMINT_SERVE_MAX_DECODED_BYTES": "1M"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wire") / "slice-means"
    save_model(SliceMeans(), path)
    return path


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 5000-slice volume and a 300 x 1024 x 1024 float32 volume (1.25 GiB, a sparse file:
    the disk holds almost nothing of it), each alone in a directory for ``datamint batch``.
    In-process, a local ``.npy`` is mapped, so the three readings share the page cache."""
    root = tmp_path_factory.mktemp("studies")
    (root / "many").mkdir()
    many = root / "many" / "many-slices.npy"
    np.save(many, np.linspace(0, 1, 5000 * 16, dtype=np.float32).reshape(5000, 4, 4))
    (root / "big").mkdir()
    big = root / "big" / "big-volume.npy"
    volume = np.lib.format.open_memmap(big, mode="w+", dtype=np.float32, shape=(300, 1024, 1024))
    volume.flush()
    del volume
    assert big.stat().st_size > 1024**3
    return {"many": many, "big": big}


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "datamint_core.cli", *args],
        capture_output=True,
        text=True,
        env=server_env(**SERVER_LIMITS_ENV),
        timeout=timeout,
    )


@pytest.mark.parametrize(("study", "slices"), [("many", 5000), ("big", 300)])
def test_a_users_own_large_volume_runs_through_predict_the_cli_and_batch(
    model_path, studies, tmp_path, monkeypatch, study, slices
):
    from datamint_core import load_model
    from datamint_core.batch import read_results
    from datamint_core.io import read

    for variable, value in SERVER_LIMITS_ENV.items():
        monkeypatch.setenv(variable, value)  # a server's settings: not this process's
    path = studies[study]
    model = load_model(str(model_path))

    (in_process,) = model.predict([VolumeResource(path=str(path))], {"mode": "volume"})
    (through_io,) = model.predict([read(str(path))], {"mode": "volume"})
    predicted = cli("predict", "-m", str(model_path), "-i", str(path), "--mode", "volume",
                    "-o", str(tmp_path / "out.json"))  # fmt: skip
    batch = cli("batch", "-m", str(model_path), "-i", str(path.parent), "-o",
                str(tmp_path / "batch"), "--mode", "volume", "--workers", "1",
                "--no-progress")  # fmt: skip

    assert len(in_process) == slices
    assert [a.slice_index for a in in_process] == list(range(slices))
    assert [a.to_dict() for a in through_io] == [a.to_dict() for a in in_process]
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    (from_cli,) = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert from_cli == [annotation.to_dict() for annotation in in_process]
    assert batch.returncode == 0, batch.stderr[-2000:]
    rows = read_results(tmp_path / "batch")
    assert list(rows.status) == ["ok"] and list(rows.num_annotations) == [slices]
    assert json.loads(rows.annotations[0]) == from_cli


def test_a_user_limits_their_own_code_only_when_they_ask(model_path, studies):
    from datamint_core import load_model

    model = load_model(str(model_path))
    many = VolumeResource(path=str(studies["many"]))

    with request_limits(max_slices=4096), pytest.raises(InputTooLargeError) as refused:
        model.predict([many], {"mode": "volume"})
    with request_limits(max_decoded_bytes="1M"), pytest.raises(InputTooLargeError, match="1048576"):
        VolumeResource(path=str(studies["big"])).pixels  # read on first use
    with pytest.raises(ValueError, match="max_slices=0 is not valid; accepted: a positive integer"):
        with request_limits(max_slices=0):
            pass

    assert "5000 slices, over the limit of 4096 per request (--max-slices" in str(refused.value)
    assert len(model.predict([many], {"mode": "volume"})[0]) == 5000  # and no limit after


def test_datamint_serve_still_refuses_the_same_volumes_with_413(model_path, studies, tmp_path):
    server = datamint_serve(
        model_path, tmp_path / "server.log", "--allow-path-dir", str(studies["many"].parents[1])
    )
    try:
        server.wait_ready()
        answers = {
            study: call(
                server.url + "/invocations",
                {"resources": [{"kind": "volume", "path": str(p)}], "params": {"mode": "volume"}},
            )
            for study, p in studies.items()
        }
    finally:
        server.stop()

    (many_status, many), (big_status, big) = answers["many"], answers["big"]
    assert (many_status, many["error_code"]) == (413, "INPUT_TOO_LARGE"), many
    assert "5000 slices, over the limit of 4096 per request (--max-slices" in many["message"]
    assert (big_status, big["error_code"]) == (413, "INPUT_TOO_LARGE"), big
    assert "over the limit of 1073741824 decoded bytes per request (--max-decoded-bytes" in (
        big["message"]
    )
