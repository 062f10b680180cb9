"""``datamint predict`` says on stderr which files it wrote and what they hold; stdout stays
the result alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from datamint_core import SegmentationAnnotation, VolumeResource, save_model
from datamint_core.cli import main
from tests.conftest import REPO_ROOT
from tests.core.dicom_files import write_series
from tests.core.sample_models import ThresholdSegmenter, phantom_volume

nibabel = pytest.importorskip("nibabel")
highdicom = pytest.importorskip("highdicom")
pytest.importorskip("PIL")


class TwoLabelSegmenter(ThresholdSegmenter):
    """``tissue`` above the threshold, ``core`` above twice the threshold."""

    def predict_image(self, model_input, **kwargs):
        return [
            [
                SegmentationAnnotation("tissue", r.pixels > self.threshold),
                SegmentationAnnotation("core", r.pixels > 2 * self.threshold),
            ]
            for r in model_input
        ]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reports") / "two-labels"
    save_model(TwoLabelSegmenter(threshold=100.0), path)
    return path


def datamint(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "datamint_core.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_predict_on_a_dicom_series_says_it_wrote_a_seg_with_its_segments_and_the_overlay(
    model_path, tmp_path
):
    write_series(tmp_path / "ct", 6, size=32, seed=5)

    done = datamint("predict", "-m", str(model_path), "-i", "ct", "-o", "seg.dcm",
                    "--overlay", "seg.png", "--mode", "volume", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.startswith("wrote ")]
    assert lines == [
        "wrote seg.dcm (DICOM SEG, 2 segments: 'tissue', 'core')",
        "wrote seg.png (overlay picture, 2 labels: 'tissue', 'core')",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        segments = highdicom.seg.segread(tmp_path / "seg.dcm").SegmentSequence
    assert [segment.SegmentLabel for segment in segments] == ["tissue", "core"]
    assert (tmp_path / "seg.png").read_bytes().startswith(b"\x89PNG")


def test_predict_says_which_number_is_which_label_in_a_nifti_label_map(model_path, tmp_path):
    volume = (phantom_volume() * 300).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume.transpose(2, 1, 0), np.diag([0.8, 0.8, 2.5, 1])),
                 tmp_path / "ct.nii.gz")

    done = datamint("predict", "-m", str(model_path), "-i", "ct.nii.gz", "-o", "labels.nii.gz",
                    "--mode", "volume", cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert "wrote labels.nii.gz (NIfTI label map, 2 labels: 1='tissue', 2='core')" in (
        done.stderr.splitlines()
    )
    written = np.asarray(nibabel.load(tmp_path / "labels.nii.gz").dataobj)
    assert set(np.unique(written)) <= {0, 1, 2} and (written == 2).any()


def test_predict_says_how_many_annotations_a_json_output_holds_and_nothing_for_stdout(
    model_path, tmp_path, capsys
):
    volume = VolumeResource((phantom_volume() * 300).astype(np.float32), id="ct-1")
    (tmp_path / "request.json").write_text(json.dumps({"resources": [volume.to_dict()]}))

    assert main(["predict", "-m", str(model_path), "-i", str(tmp_path / "request.json"),
                 "-o", str(tmp_path / "out.json"), "--mode", "volume"]) == 0
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"wrote {tmp_path / 'out.json'} (predictions JSON, 2 annotations for 1 input)"
    )

    assert main(["predict", "-m", str(model_path), "-i", str(tmp_path / "request.json"),
                 "--mode", "volume"]) == 0
    captured = capsys.readouterr()
    assert "wrote" not in captured.err
    assert len(json.loads(captured.out)["predictions"][0]) == 2
