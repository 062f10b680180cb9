"""A 4-channel 3-D torch network on multi-modal cases; batch workers sharing the cores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datamint_core import load_model, save_model
from datamint_core.batch import read_annotations, read_results, run_batch
from datamint_core.batch._local import available_cores, default_workers
from datamint_core.cli import main
from datamint_core.io import read, read_case
from datamint_core.serving.payload import predictions_to_json
from tests.core.channel_models import MODALITIES, brain_case, write_case
from tests.torch.channel_nets import FourChannelConv3d, FourChannelNetSegmenter, ThreadReporter

pytest.importorskip("nibabel")


def test_a_4_channel_3d_network_predicts_the_same_from_four_files_and_from_a_4d_nifti(tmp_path):
    paths = write_case(tmp_path / "case", brain_case(depth=8, size=16, seed=5))
    model_path = tmp_path / "net"
    save_model(FourChannelNetSegmenter(torch_model=FourChannelConv3d()), model_path)
    case = read_case(paths["channels"])
    expected = json.loads(predictions_to_json(load_model(str(model_path)).predict([case], {})))
    assert 0 < np.count_nonzero(load_model(str(model_path)).predict([case], {})[0][0].mask)

    outputs = []
    for inputs in ([f"{n}={paths['channels'][n]}" for n in MODALITIES], [paths["four_d"]]):
        output = tmp_path / f"out-{len(outputs)}.json"
        arguments = ["predict", "-m", str(model_path), "-o", str(output), "--mode", "volume"]
        assert main(arguments + [a for item in inputs for a in ("-i", item)]) == 0
        outputs.append(json.loads(output.read_text()))

    assert outputs == [expected, expected]


def _reporter_and_four_studies(tmp_path):
    """A saved ThreadReporter and a folder of four small .npy images to batch over it."""
    model_path = tmp_path / "reporter"
    save_model(ThreadReporter(), model_path)
    studies = tmp_path / "studies"
    studies.mkdir()
    for index in range(4):
        np.save(studies / f"image-{index}.npy", np.zeros((4, 4), np.float32))
    return model_path, studies


@pytest.mark.parametrize("threads", [None, 1])
def test_batch_workers_each_compute_with_their_share_of_the_cores(tmp_path, threads):
    model_path, studies = _reporter_and_four_studies(tmp_path)

    report = run_batch(
        str(model_path),
        studies,
        tmp_path / "out",
        workers=2,
        threads_per_worker=threads,
        progress=False,
    )

    assert report.ok and report.succeeded == 4
    expected = threads or max(1, available_cores() // 2)
    for cell in read_results(tmp_path / "out").annotations:
        found = {a.identifier: a.value for a in read_annotations(cell, tmp_path / "out")}
        assert found == {"torch_threads": expected, "omp_threads": expected}


def test_the_default_workers_are_one_per_two_cores_each_computing_with_two_threads(tmp_path):
    model_path, studies = _reporter_and_four_studies(tmp_path)

    report = run_batch(str(model_path), studies, tmp_path / "out", progress=False)

    assert report.ok and report.succeeded == 4
    assert default_workers() == max(1, available_cores() // 2)
    expected = available_cores() // default_workers()  # 2 (1 on one core, 3 on three)
    for cell in read_results(tmp_path / "out").annotations:
        found = {a.identifier: a.value for a in read_annotations(cell, tmp_path / "out")}
        assert found == {"torch_threads": expected, "omp_threads": expected}


def test_a_thread_count_that_is_not_a_positive_integer_is_refused(tmp_path, monkeypatch):
    model_path = tmp_path / "reporter"
    save_model(ThreadReporter(), model_path)
    studies = tmp_path / "studies"
    studies.mkdir()
    np.save(studies / "image.npy", np.zeros((4, 4), np.float32))
    monkeypatch.setenv("DATAMINT_BATCH_THREADS_PER_WORKER", "many")

    with pytest.raises(ValueError, match="DATAMINT_BATCH_THREADS_PER_WORKER='many' is not valid"):
        run_batch(str(model_path), studies, tmp_path / "out", workers=1, progress=False)
    assert read(studies / "image.npy").shape == (4, 4)
