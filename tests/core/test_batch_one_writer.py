"""One writer per batch output: real ``datamint batch`` processes racing for one OUTPUT.

Before the lock, two jobs started into one output both exited 0 and left 80 rows for 40 ids.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from datamint_core import OutputInUseError, save_model
from datamint_core.batch import read_results, run_batch
from datamint_core.batch._lock import LOCK_FILE, hold_output
from datamint_core.cli import main
from tests.conftest import REPO_ROOT
from tests.core.batch_models import TwoLabelModel

STUDIES = 40


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("one-writer") / "cohort"
    directory.mkdir()
    rng = np.random.default_rng(3)
    for index in range(STUDIES):
        np.save(directory / f"study-{index:02d}.npy", rng.random((12, 12), dtype=np.float32))
    return directory


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 6 s for the cohort on one worker: long enough to race a second job against."""
    path = tmp_path_factory.mktemp("one-writer-model") / "slow"
    save_model(TwoLabelModel(seconds_per_image=0.15), path)
    return path


def batch_command(model: Path, cohort: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "datamint_core.cli", "batch", "-m", str(model), "-i",
            str(cohort), "-o", str(output), "--workers", "1", "--no-progress", *extra]


def child_env() -> dict[str, str]:
    return {**os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def wait_until_it_holds(job: subprocess.Popen, output: Path, timeout: float = 120) -> None:
    """Until the job has written itself into the lock file (it holds the lock then)."""
    deadline = time.monotonic() + timeout
    while True:
        assert job.poll() is None, job.stderr.read().decode()
        try:
            if json.loads((output / LOCK_FILE).read_text())["pid"] == job.pid:
                return
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, "the first job never took the lock"
        time.sleep(0.05)


def live_processes_in_group(group: int) -> list[str]:
    """The processes of a process group that are not zombies, as ``pid command`` (Linux)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        command, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1]
        state, _, process_group = fields.split()[:3]
        if int(process_group) == group and state != "Z":
            live.append(f"{stat.parent.name} {command}")
    return live


def assert_one_row_per_study(output: Path) -> None:
    results = read_results(output)
    assert len(results) == STUDIES and results.id.is_unique
    assert (results.status == "ok").all()


def test_a_second_batch_job_into_an_output_a_running_job_holds_exits_1_at_once_naming_it(
    cohort, slow_model, tmp_path
):
    output = tmp_path / "out"
    first = subprocess.Popen(batch_command(slow_model, cohort, output), env=child_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
    try:
        wait_until_it_holds(first, output)
        started = time.monotonic()
        second = subprocess.run(batch_command(slow_model, cohort, output), env=child_env(),
                                capture_output=True, text=True, timeout=120)
        refused_in = time.monotonic() - started

        assert first.poll() is None, "the first job ended before the second was refused"
        assert second.returncode == 1, second.stderr
        assert second.stdout == ""
        assert second.stderr.startswith(
            f"datamint: error: Another batch job is writing into {str(output)!r} "
            f"(pid {first.pid} on "
        )
        assert "one job at a time writes an output directory" in second.stderr
        assert "rerunning the same command then resumes" in second.stderr
        assert len(second.stderr.splitlines()) == 1
        assert refused_in < 30  # the interpreter's start-up, not the first job's run
        out, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()

    assert first.returncode == 0, err
    assert f"{STUDIES} rows: {STUDIES} predicted, 0 failed, 0 already done" in out.decode()
    assert_one_row_per_study(output)
    rerun = subprocess.run(batch_command(slow_model, cohort, output), env=child_env(),
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"0 predicted, 0 failed, {STUDIES} already done" in rerun.stdout
    assert_one_row_per_study(output)


def test_after_the_holder_is_killed_with_sigkill_its_workers_die_and_a_rerun_completes(
    cohort, slow_model, tmp_path
):
    output = tmp_path / "out"
    command = batch_command(slow_model, cohort, output, "--rows-per-part", "4")
    holder = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_until_it_holds(holder, output)
        deadline = time.monotonic() + 120
        while not list(output.glob("part-*.parquet")):
            assert holder.poll() is None, holder.stderr.read().decode()
            assert time.monotonic() < deadline, "the job committed no part in 120 s"
            time.sleep(0.05)
        # Only the holder dies (no chance to shut its pool down): the lock, which no child
        # inherits, goes with it, and the kernel kills its worker too.
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        deadline = time.monotonic() + 20
        while live_processes_in_group(holder.pid):
            assert time.monotonic() < deadline, (
                f"the dead job's processes live on: {live_processes_in_group(holder.pid)}"
            )
            time.sleep(0.1)
        done_before = len(read_results(output))
        assert 0 < done_before < STUDIES, "the kill came too late to test a resume"

        rerun = subprocess.run(command, env=child_env(), capture_output=True, text=True,
                               timeout=240)
    finally:
        try:
            os.killpg(holder.pid, signal.SIGKILL)  # the orphaned worker, if still there
        except ProcessLookupError:
            pass

    assert rerun.returncode == 0, rerun.stderr
    assert f"0 failed, {done_before} already done" in rerun.stdout
    assert_one_row_per_study(output)
    assert not list(output.rglob("*.incomplete"))


def test_run_batch_refuses_a_held_output_before_any_engine_starts_and_leaves_it_untouched(
    cohort, tmp_path
):
    model = tmp_path / "fast"
    save_model(TwoLabelModel(), model)
    output = tmp_path / "out"
    (output / ".part-x-local-00001.parquet.1.incomplete").parent.mkdir(parents=True)
    (output / ".part-x-local-00001.parquet.1.incomplete").write_bytes(b"PAR1 being written")

    with hold_output(output):
        with pytest.raises(OutputInUseError, match="Another batch job is writing into"):
            run_batch(str(model), cohort, output, workers=1, progress=False)
        # The Spark driver takes the same lock before it starts a session (or imports pyspark).
        with pytest.raises(OutputInUseError, match=r"\(pid \d+ on .*, started "):
            run_batch(str(model), cohort, output, engine="spark", workers=1)
        # The refused job cleaned nothing up: the holder's part being written is still there.
        assert (output / ".part-x-local-00001.parquet.1.incomplete").exists()
    assert (output / LOCK_FILE).read_bytes() == b""  # no stale holder shown after release

    report = run_batch(str(model), cohort, output, workers=1, progress=False)
    assert (report.succeeded, report.failed) == (STUDIES, 0)
    assert_one_row_per_study(output)  # the lock file is not read as a Parquet part


def test_a_batch_usage_error_exits_2_with_one_datamint_error_line(cohort, tmp_path, capsys):
    model = tmp_path / "fast"
    save_model(TwoLabelModel(), model)
    output = tmp_path / "out"
    small = tmp_path / "small"
    small.mkdir()
    np.save(small / "a.npy", np.zeros((4, 4), np.float32))
    base = ["batch", "-m", str(model), "-o", str(output), "--workers", "1", "--no-progress"]
    assert main([*base, "-i", str(small), "--mode", "image"]) == 0
    capsys.readouterr()

    assert main([*base, "-i", str(small), "--mode", "volume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"datamint: error: {str(output)!r} holds the results of another batch")
    assert "Rerun with the same model and params to resume" in err
    assert len(err.splitlines()) == 1

    assert main([*base, "-i", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("datamint: error: Batch input ")
    assert "does not exist; give a directory of studies or a manifest table" in err

    with pytest.raises(SystemExit) as exit_code:
        main([*base, "-i", str(small), "--rows-per-part", "0"])
    assert exit_code.value.code == 2
    assert "error: argument --rows-per-part: '0' is not valid; accepted: a positive integer." in (
        capsys.readouterr().err
    )
