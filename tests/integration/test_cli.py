"""The ``datamint`` command: each subcommand, its help, and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datamint_core import VolumeResource, load_model, save_model
from datamint_core.cli import main
from tests.core.sample_models import ThresholdSegmenter, phantom_volume
from tests.integration._server import server_env

SUBCOMMANDS = ["predict", "serve", "info", "validate", "generate-dockerfile"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "segmenter"
    save_model(ThresholdSegmenter(), path)
    return path


def expected_predictions(model_path: Path, volume: VolumeResource, params: dict) -> list:
    model = load_model(str(model_path))
    return [[a.to_dict() for a in entry] for entry in model.predict([volume], params)]


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_has_help_that_names_the_model_option(subcommand, capsys):
    with pytest.raises(SystemExit) as exited:
        main([subcommand, "--help"])

    assert exited.value.code == 0
    assert "-m MODEL_URI, --model-uri MODEL_URI" in capsys.readouterr().out


def test_a_missing_model_option_is_a_usage_error_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["info"])

    assert exited.value.code == 2
    assert "the following arguments are required: -m/--model-uri" in capsys.readouterr().err


def test_a_param_without_a_value_is_a_usage_error(model_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["predict", "-m", str(model_path), "--param", "slice_index"])

    assert exited.value.code == 2
    assert "--param 'slice_index' is not KEY=VALUE" in capsys.readouterr().err


def test_a_model_that_does_not_exist_is_a_runtime_failure_with_exit_code_1(tmp_path, capsys):
    assert main(["info", "-m", str(tmp_path / "no-such-model")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("datamint: error: ")
    assert "no-such-model" in err


def test_predict_reads_a_json_request_and_writes_the_masks_of_the_chosen_slice(
    model_path, tmp_path
):
    volume = VolumeResource(phantom_volume(), id="ct-1")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"resources": [volume.to_dict()]}))
    output = tmp_path / "out.json"

    code = main(
        ["predict", "-m", str(model_path), "-i", str(request), "-o", str(output),
         "--mode", "slice", "--param", "slice_index=3"]
    )  # fmt: skip

    assert code == 0
    expected = expected_predictions(model_path, volume, {"mode": "slice", "slice_index": 3})
    assert json.loads(output.read_text()) == {"predictions": expected}


def test_predict_takes_an_npy_volume_and_predicts_it_whole_by_default(model_path, tmp_path):
    pixels = phantom_volume()
    np.save(tmp_path / "ct.npy", pixels)
    output = tmp_path / "out.json"

    assert main(["predict", "-m", str(model_path), "-i", str(tmp_path / "ct.npy"), "-o",
                 str(output)]) == 0  # fmt: skip

    expected = expected_predictions(model_path, VolumeResource(pixels), {})
    assert json.loads(output.read_text()) == {"predictions": expected}
    assert expected[0][0]["mask"]["shape"] == [12, 32, 32]


def test_predict_with_an_unknown_mode_fails_with_exit_code_1_and_says_why(
    model_path, tmp_path, capsys
):
    np.save(tmp_path / "ct.npy", phantom_volume())

    code = main(["predict", "-m", str(model_path), "-i", str(tmp_path / "ct.npy"), "--mode", "x"])

    assert code == 1
    assert "Unknown prediction mode 'x'" in capsys.readouterr().err


def test_info_shows_the_task_the_modes_with_their_params_and_the_annotations(model_path, capsys):
    assert main(["info", "-m", str(model_path)]) == 0

    out = capsys.readouterr().out
    assert "task type:       volume_segmentation" in out
    assert "  slice          slice_index, axis?" in out
    assert "  volume         (no params)" in out
    assert "  bright: segmentation" in out


def test_info_json_is_the_mlmodel_datamint_block(model_path, capsys):
    assert main(["info", "-m", str(model_path), "--json"]) == 0

    block = json.loads(capsys.readouterr().out)
    assert block["supported_modes"] == ["image", "frame", "all_frames", "slice", "volume"]
    assert block["model_class"] == "tests.core.sample_models.ThresholdSegmenter"


def test_validate_runs_a_smoke_prediction_and_exits_0_when_every_check_passes(model_path, capsys):
    assert main(["validate", "-m", str(model_path)]) == 0

    out = capsys.readouterr().out
    assert "PASS  predict" in out
    assert out.rstrip().endswith("OK")


def test_validate_exits_1_when_the_sample_cannot_be_served(model_path, tmp_path, capsys):
    np.save(tmp_path / "ct.npy", phantom_volume())

    code = main(
        ["validate", "-m", str(model_path), "-i", str(tmp_path / "ct.npy"), "--mode", "slice"]
    )

    assert code == 1
    assert "needs the parameter(s) ['slice_index']" in capsys.readouterr().out


@pytest.mark.both_envs  # torch installed beside it must not leak into the pins
def test_generate_dockerfile_writes_a_torch_free_image_for_a_numpy_model(model_path, tmp_path):
    output = tmp_path / "image"

    assert main(["generate-dockerfile", "-m", str(model_path), "-o", str(output)]) == 0

    dockerfile = (output / "Dockerfile").read_text()
    requirements = (output / "model" / "requirements.txt").read_text()
    assert "torch" not in dockerfile.lower() and "torch" not in requirements.lower()
    assert "COPY model/wheels /opt/datamint/model/wheels" in dockerfile
    assert "RUN cd /opt/datamint/model && pip install --no-cache-dir -r requirements.txt" in (
        dockerfile
    )
    assert requirements.startswith("./wheels/datamint-")
    assert (output / "model" / requirements.split()[0]).is_file()
    assert "\nUSER datamint\n" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "/ping" in dockerfile
    assert (output / "model" / "MLmodel").is_file()


def test_the_console_script_predicts_from_stdin_to_stdout(model_path):
    volume = VolumeResource(phantom_volume(), id="ct-1")
    script = Path(sys.executable).with_name("datamint")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "datamint_core.cli"]

    completed = subprocess.run(
        [*command, "predict", "-m", str(model_path), "--mode", "volume"],
        input=json.dumps({"inputs": [volume.to_dict()]}),
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = expected_predictions(model_path, volume, {"mode": "volume"})
    assert json.loads(completed.stdout) == {"predictions": expected}
