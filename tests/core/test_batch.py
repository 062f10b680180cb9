"""``datamint batch`` / ``run_batch`` on the local engine: results, failures, resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import datamint_core.batch
from datamint_core import (
    BatchInputError,
    ImageResource,
    OutputMismatchError,
    ResourceError,
    VolumeResource,
    load_model,
    save_model,
)
from datamint_core.batch import MANIFEST_COLUMNS, read_annotations, read_results, run_batch
from datamint_core.batch._inputs import iter_inputs
from datamint_core.batch._rows import mask_file_name
from datamint_core.cli import main
from datamint_core.io import read
from tests.conftest import REPO_ROOT
from tests.core.batch_models import LOAD_LOG_ENV, UNREADABLE, TwoLabelModel, make_studies


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("batch") / "two-label"
    save_model(TwoLabelModel(), path)
    return path


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    directory = tmp_path_factory.mktemp("studies") / "cohort"
    return directory, make_studies(directory)


def expected_annotations(model_path: Path, studies: dict[str, Path], params=None) -> dict:
    """In-process predict on each study, read with the same reader, one call per study."""
    model = load_model(str(model_path))
    return {name: model.predict([read(path)], params or {})[0] for name, path in studies.items()}


def assert_matches_in_process_predict(output: Path, expected: dict, failed: set[str]) -> None:
    results = read_results(output)
    assert results.id.is_unique, results.id[results.id.duplicated()].tolist()
    assert set(results.id) == set(expected) | failed
    ok = results[results.status == "ok"]
    assert set(ok.id) == set(expected)
    for row in ok.itertuples():
        annotations = read_annotations(row.annotations, output)
        assert annotations == expected[row.id], row.id
        assert row.num_annotations == len(annotations) >= 2
        assert row.mask_file.startswith("_masks/") and (output / row.mask_file).is_file()
    bad = results[results.status == "failed"].set_index("id")
    assert set(bad.index) == failed
    assert bad.annotations.isna().all()
    return bad


def test_local_engine_gives_in_process_annotations_and_records_unreadable_files_as_failed(
    model_path, studies, tmp_path, monkeypatch
):
    directory, studies_by_id = studies
    load_log = tmp_path / "loads.txt"
    monkeypatch.setenv(LOAD_LOG_ENV, str(load_log))
    output = tmp_path / "out"

    report = run_batch(str(model_path), directory, output, workers=2, rows_per_part=16)

    assert (report.total, report.succeeded, report.failed, report.skipped) == (
        len(studies_by_id) + len(UNREADABLE),
        len(studies_by_id),
        len(UNREADABLE),
        0,
    )
    assert not report.ok
    bad = assert_matches_in_process_predict(
        output, expected_annotations(model_path, studies_by_id), set(UNREADABLE)
    )
    assert "it is not a .npy file" in bad.error["corrupt.npy"]
    # datamint_core.io detects formats by content and lists every one it reads.
    assert "Cannot tell the format of" in bad.error["notes.txt"]
    assert "NIfTI (.nii, .nii.gz), PNG, JPEG, .npy or .npz" in bad.error["notes.txt"]
    assert "pickled Python objects, which are never loaded" in bad.error["pickled.npy"]
    worker_loads = [pid for pid in load_log.read_text().split() if int(pid) != os.getpid()]
    assert 1 <= len(worker_loads) == len(set(worker_loads)) <= 2  # once per worker process
    parts = sorted(p.name for p in output.glob("*.parquet"))
    assert len(parts) == -(-report.total // 16)
    assert pd.read_parquet(output).shape[0] == report.total  # what any Parquet reader sees


def test_killed_job_reruns_to_a_complete_output_with_no_duplicate_rows(studies, tmp_path):
    directory, studies_by_id = studies
    model_path = tmp_path / "slow"
    save_model(TwoLabelModel(seconds_per_image=0.01), model_path)
    output = tmp_path / "out"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "datamint_core.cli", "batch", "-m", str(model_path)]
    command += ["-i", str(directory), "-o", str(output), "--workers", "2", "--rows-per-part", "8"]

    job = subprocess.Popen(command, env=env, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(list(output.glob("part-*.parquet"))) < 3:
        assert job.poll() is None, job.stderr.read().decode()
        assert time.monotonic() < deadline, "the job committed no parts in 120 s"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()

    committed = read_results(output)
    assert 0 < len(committed) < len(studies_by_id), "the kill came too late to test a resume"
    assert committed.id.is_unique
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)

    assert rerun.returncode == 3, rerun.stderr
    assert f"{len(committed) - sum(committed.status == 'failed')} already done" in rerun.stdout
    assert f"{len(UNREADABLE)} row(s) failed" in rerun.stderr
    assert_matches_in_process_predict(
        output, expected_annotations(model_path, studies_by_id), set(UNREADABLE)
    )
    assert not list(output.rglob("*.incomplete"))


def test_rerun_retries_failed_rows_and_skips_done_ones(model_path, tmp_path):
    directory = tmp_path / "cohort"
    directory.mkdir()
    array = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    np.save(directory / "a.npy", array)
    (directory / "b.npy").write_bytes(b"not yet")
    output = tmp_path / "out"

    first = run_batch(str(model_path), directory, output, workers=1, progress=False)
    np.save(directory / "b.npy", array.T)
    # What a killed run leaves behind: a part being written, a Spark run's staged inputs.
    (output / ".part-x-local-00009.parquet.123.incomplete").write_bytes(b"PAR1 half")
    (output / "_pending-0123456789ab").mkdir()
    (output / "_pending-0123456789ab" / "rows.parquet").write_bytes(b"PAR1")
    second = run_batch(str(model_path), directory, output, workers=1, progress=False)

    assert (first.succeeded, first.failed) == (1, 1)
    assert (second.succeeded, second.failed, second.skipped) == (1, 0, 1)
    assert second.ok
    results = read_results(output).set_index("id")
    assert sorted(results.index) == ["a.npy", "b.npy"]
    assert (results.status == "ok").all() and results.error.isna().all()
    assert sorted(p.name for p in output.iterdir() if p.name.startswith((".", "_p"))) == []
    (expected,) = load_model(str(model_path)).predict([ImageResource(array.T)])
    assert read_annotations(results.annotations["b.npy"], output) == expected


def test_a_failed_row_carries_the_error_code_a_server_answers_its_error_with(
    model_path, tmp_path
):
    import pyarrow.parquet as pq

    directory = tmp_path / "cohort"
    directory.mkdir()
    np.save(directory / "image.npy", np.zeros((8, 8), np.float32))
    (directory / "broken.npy").write_bytes(b"not an array")
    output = tmp_path / "out"

    run_batch(str(model_path), directory, output, workers=1, progress=False)

    results = read_results(output).set_index("id")
    assert results.error_code["broken.npy"] == ResourceError.error_code == "INVALID_RESOURCE"
    assert results.error_code.isna()["image.npy"] and results.status["image.npy"] == "ok"
    # An output written before the column existed still reads, its rows without a code.
    (part,) = output.glob("part-*.parquet")
    pq.write_table(pq.read_table(part).drop_columns(["error_code"]), part)
    older = read_results(output).set_index("id")
    assert older.error_code.isna().all() and older.status.to_dict() == results.status.to_dict()


def test_a_manifest_gives_ids_geometry_and_metadata_and_relative_paths(model_path, tmp_path):
    volume = np.random.default_rng(1).random((3, 10, 10)).astype(np.float32)
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "v.npy", volume)
    rows = [
        {
            "id": "ct-1",
            "path": "data/v.npy",
            "spacing": "[2.5, 0.7, 0.7]",
            "modality": "CT",
            "metadata": json.dumps({"PatientAge": "061Y"}),
        },
        {"id": "ct-2", "path": "data/missing.npy"},
    ]
    manifests = {
        "m.csv": lambda p: pd.DataFrame(rows).to_csv(p, index=False),
        "m.jsonl": lambda p: p.write_text("\n".join(json.dumps(r) for r in rows)),
        "m.parquet": lambda p: pd.DataFrame(rows).to_parquet(p),
    }
    expected = load_model(str(model_path)).predict(
        [VolumeResource(volume, spacing=(2.5, 0.7, 0.7))], {"mode": "volume"}
    )[0]
    for name, write in manifests.items():
        write(tmp_path / name)
        output = tmp_path / f"out-{name}"

        report = run_batch(str(model_path), tmp_path / name, output, {"mode": "volume"}, workers=1)

        results = read_results(output).set_index("id")
        assert (report.succeeded, report.failed) == (1, 1), name
        annotations = read_annotations(results.annotations["ct-1"], output)
        assert annotations == expected, name
        assert annotations[0].spacing == (2.5, 0.7, 0.7)
        assert "no such file" in results.error["ct-2"]


def test_bad_inputs_and_a_changed_job_are_refused_with_what_is_accepted(model_path, tmp_path):
    (tmp_path / "m.csv").write_text("file,label\na.npy,1\n")
    (tmp_path / "m.xlsx").write_text("")
    (tmp_path / "dup.jsonl").write_text('{"path": "a.npy"}\n{"path": "a.npy"}\n')
    (tmp_path / "in").mkdir()

    with pytest.raises(BatchInputError, match=r"unknown column\(s\) \['file', 'label'\]; accepted"):
        run_batch(str(model_path), tmp_path / "m.csv", tmp_path / "o1")
    with pytest.raises(
        BatchInputError, match=r"table format .*\.csv, \.jsonl, \.ndjson, \.parquet"
    ):
        run_batch(str(model_path), tmp_path / "m.xlsx", tmp_path / "o2")
    with pytest.raises(BatchInputError, match="names id 'a.npy' twice"):
        run_batch(str(model_path), tmp_path / "dup.jsonl", tmp_path / "o3")
    with pytest.raises(BatchInputError, match="does not exist; give a directory of studies"):
        run_batch(str(model_path), tmp_path / "nothing", tmp_path / "o4")
    with pytest.raises(
        ValueError, match=r"Unknown batch engine 'dask'; accepted: \['local', 'spark'\]"
    ):
        run_batch(str(model_path), tmp_path / "in", tmp_path / "o5", engine="dask")
    with pytest.raises(ValueError, match="workers=0 is not valid; accepted: a positive integer"):
        run_batch(str(model_path), tmp_path / "in", tmp_path / "o6", workers=0)

    run_batch(str(model_path), tmp_path / "in", tmp_path / "o7", {"mode": "image"}, workers=1)
    with pytest.raises(OutputMismatchError, match="holds the results of another batch job"):
        run_batch(str(model_path), tmp_path / "in", tmp_path / "o7", {"mode": "volume"})


def test_cli_batch_exits_3_when_rows_fail_and_1_when_the_model_cannot_load(
    model_path, tmp_path, capsys
):
    directory = tmp_path / "in"
    directory.mkdir()
    np.save(directory / "ok.npy", np.zeros((4, 4), dtype=np.float32))
    (directory / "bad.npy").write_bytes(b"x")

    code = main(
        [
            "batch",
            "-m",
            str(model_path),
            "-i",
            str(directory),
            "-o",
            str(tmp_path / "o"),
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 3
    assert "2 rows: 1 predicted, 1 failed, 0 already done" in captured.out
    assert "1 row(s) failed; their errors are in the 'error' column" in captured.err

    code = main(
        [
            "batch",
            "-m",
            str(tmp_path / "no-model"),
            "-i",
            str(directory),
            "-o",
            str(tmp_path / "o2"),
            "--workers",
            "1",
            "--no-progress",
        ]
    )
    assert code == 1
    assert "A batch worker could not load the model" in capsys.readouterr().err


def test_cli_batch_help_names_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["batch", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "3 the job finished but some rows failed" in text
    assert "--engine {local,spark}" in text


def test_the_batch_package_exports_exactly_this_and_adds_no_heavy_import(run_python):
    assert sorted(datamint_core.batch.__all__) == [
        "BatchInputError",
        "BatchReport",
        "MANIFEST_COLUMNS",
        "OutputInUseError",
        "OutputMismatchError",
        "read_annotations",
        "read_results",
        "run_batch",
    ]
    # mlflow.pyfunc itself imports pyarrow (and pyspark, where installed); the batch room
    # and the CLI's parser add nothing heavy on top of the core.
    out = run_python(
        """
        import sys
        import datamint_core
        before = set(sys.modules)
        import datamint_core.batch, datamint_core.cli
        datamint_core.cli._parser()
        print(sorted(m for m in set(sys.modules) - before if m.split(".")[0] in
                     ("pyarrow", "pyspark", "pandas", "fastapi", "uvicorn")))
        """
    )
    assert out.strip() == "[]"


def test_a_table_cell_may_give_metadata_as_json_text_and_lists_as_studies_by_id():
    # What Spark and Arrow hand to predict: metadata as a string column, lists as studies_by_id.
    from datamint_core import ResourceError
    from datamint_core.wire import as_resources

    volume = np.zeros((2, 3, 3), dtype=np.float32)
    frame = pd.DataFrame(
        [
            {
                "kind": "volume",
                "pixel_data": {"encoding": "list", "data": volume.tolist()},
                "metadata": '{"StudyDescription": "CT ABDOMEN"}',
                "spacing": np.array([2.5, 0.7, 0.7]),
                "affine": np.array([np.eye(4)[i] for i in range(4)], dtype=object),
            }
        ]
    )

    (resource,) = as_resources(frame)

    assert resource.metadata == {"StudyDescription": "CT ABDOMEN"}
    assert resource.spacing == (2.5, 0.7, 0.7)
    assert np.array_equal(resource.affine, np.eye(4))
    with pytest.raises(ResourceError, match="metadata '{oops' is not valid JSON; in a table"):
        as_resources(frame.assign(metadata="{oops"))


def test_a_batch_row_as_arrow_hands_it_over_reads_by_the_same_wire_rules(tmp_path):
    # A staged row (Spark/Arrow: lists as arrays, missing cells NaN) and its plain form read
    # alike, with the row's fields over the file's and the table's messages for bad cells.
    from datamint_core import ResourceError
    from datamint_core.batch._inputs import load_resource

    np.save(tmp_path / "ct.npy", np.arange(2 * 3 * 3, dtype=np.int16).reshape(2, 3, 3))
    plain = {
        "id": "ct-1", "path": str(tmp_path / "ct.npy"), "kind": None, "spacing": [2.5, 0.7, 0.7],
        "affine": np.eye(4).tolist(), "modality": "CT", "filename": None, "mimetype": None,
        "metadata": '{"StudyDescription": "CT ABDOMEN"}', "channels": None, "prompts": None,
    }
    arrow = {
        **plain, "kind": float("nan"), "spacing": np.array([2.5, 0.7, 0.7]),
        "affine": np.array([np.eye(4)[i] for i in range(4)], dtype=object),
    }

    resource = load_resource(arrow)

    assert resource == load_resource(plain)
    assert isinstance(resource, VolumeResource) and resource.filename == "ct.npy"
    assert resource.spacing == (2.5, 0.7, 0.7) and resource.modality == "CT"
    assert resource.metadata == {"StudyDescription": "CT ABDOMEN"}
    with pytest.raises(ResourceError, match="metadata '{oops' is not valid JSON; in a table"):
        load_resource({**plain, "metadata": "{oops"})
    with pytest.raises(ResourceError, match="'affine' describes volumes; resource 'ct-1'"):
        load_resource({**plain, "kind": "video"})
    with pytest.raises(ResourceError, match=r"Unknown kind 'scan'; accepted kinds: \["):
        load_resource({**plain, "kind": "scan"})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lines=st.lists(
        st.dictionaries(st.sampled_from([*MANIFEST_COLUMNS, "other"]), json_values, max_size=5)
        | json_values,
        max_size=4,
    )
)
def test_any_jsonl_manifest_lists_rows_or_says_what_is_accepted(tmp_path, lines):
    manifest = tmp_path / "hostile.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines))

    try:
        rows = list(iter_inputs(manifest))
    except BatchInputError as error:
        assert re.search(r"accepted|every row needs|give a", str(error)), str(error)
        return
    assert all(isinstance(row["id"], str) and isinstance(row["path"], str) for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)


@given(st.lists(st.text(min_size=1, max_size=40), min_size=2, max_size=6, unique=True))
def test_mask_file_names_are_one_safe_path_component_and_unique_per_id(row_ids):
    names = [mask_file_name(row_id) for row_id in row_ids]

    assert len(set(names)) == len(names)
    for name in names:
        assert os.sep not in name and "/" not in name and not name.startswith(".")
        assert name.endswith(".npz") and len(name) <= 100
