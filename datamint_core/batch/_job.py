"""``run_batch``: one job over every study of an input, on the local or the Spark engine."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from datamint_core.batch._inputs import count_inputs, iter_inputs
from datamint_core.batch._lock import hold_output
from datamint_core.batch._progress import Progress
from datamint_core.batch._store import new_run_id, prepare_output, require_pyarrow

ENGINES = ("local", "spark")


@dataclass(frozen=True)
class BatchReport:
    """What a batch run did.

    Attributes:
        output: the output directory.
        total: rows in the input.
        skipped: rows already done by an earlier run into the same output.
        succeeded: rows predicted in this run.
        failed: rows that failed in this run (recorded with their error; a rerun retries them).
        seconds: wall time of this run.
    """

    output: str
    total: int
    skipped: int
    succeeded: int
    failed: int
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether no row failed."""
        return self.failed == 0

    def __str__(self) -> str:
        return (
            f"{self.total} rows: {self.succeeded} predicted, {self.failed} failed, "
            f"{self.skipped} already done; {self.seconds:.1f} s; results in {self.output}"
        )


def run_batch(
    model_uri: str,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    params: dict[str, Any] | None = None,
    *,
    engine: Literal["local", "spark"] = "local",
    workers: int | None = None,
    rows_per_part: int = 64,
    spark: Any = None,
    progress: bool = True,
    threads_per_worker: int | None = None,
) -> BatchReport:
    """Predict with one model on every study of ``input``; write one Parquet row per study.

    Args:
        model_uri: the model (local directory, ``models:/name/1``, ``runs:/...``).
        input: a directory of studies (DICOM series directories, NIfTI, images, ``.npy``)
            or a manifest table (``.parquet``, ``.csv``, ``.jsonl``) with a ``path`` column
            and optionally ``id``, ``kind``, ``spacing``, ``affine``, ``modality``,
            ``filename``, ``mimetype``, ``metadata`` (a JSON object as a string), ``prompts``
            (an interactive model's prompts for the row, JSON).
        output: the output directory: committed Parquet parts (``id``, ``path``, ``status``,
            ``error``, ``annotations`` JSON, ``mask_file``, ``num_annotations``) and masks
            under ``_masks/``. Rerunning into it resumes: done rows are skipped, failed rows
            retried.
        params: prediction params (``mode``, ``slice_index``, ...), as ``predict`` takes.
        engine: ``local`` (a process pool) or ``spark``.
        workers: local processes (default: one per two CPU cores, at least one), or the
            ``N`` of ``local[N]`` when the Spark engine starts its own session (default:
            the CPU count).
        rows_per_part: rows per committed part.
        spark: a SparkSession to run on (default: the active one, else ``local[workers]``).
        progress: draw the progress line on stderr (local engine).
        threads_per_worker: compute threads of each local worker (default: the cores
            shared out among the workers, or ``DATAMINT_BATCH_THREADS_PER_WORKER``), so
            that the workers together use the machine's cores, not each all of them.

    Returns:
        A :class:`BatchReport`; ``report.ok`` is false when a row failed.

    Raises:
        ValueError: a bad engine, worker count or part size; an input that cannot be listed
            (:class:`BatchInputError`); an output that holds another job's results
            (:class:`OutputMismatchError`).
        OutputInUseError: another job is writing into ``output`` right now (one writer per
            output: the lock dies with its process, so a rerun after a crash just works).
        ImportError: pyarrow (``datamint[batch]``) or pyspark (``datamint[spark]``) missing.

    Example:
        >>> report = run_batch("models:/liver-seg/3", "/data/cohort", "/data/out",
        ...                    {"mode": "volume"}, workers=8)   # doctest: +SKIP
    """
    if engine not in ENGINES:
        raise ValueError(f"Unknown batch engine {engine!r}; accepted: {list(ENGINES)}.")
    if workers is None and engine == "local":
        from datamint_core.batch._local import default_workers

        workers = default_workers()
    elif workers is None:
        workers = os.cpu_count() or 1
    for name, value in (("workers", workers), ("rows_per_part", rows_per_part)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not valid; accepted: a positive integer.")
    if engine == "local":
        from datamint_core.batch._local import threads_per_worker as checked_threads

        checked_threads(workers, threads_per_worker)  # a bad value fails before any work
    require_pyarrow()
    params = dict(params or {})
    output = os.fspath(output)
    started = time.monotonic()
    total = count_inputs(input)
    with hold_output(output):
        done = prepare_output(output, {"model_uri": model_uri, "params": params})
        pending = (row for row in iter_inputs(input) if row["id"] not in done)
        skipped = sum(1 for row in iter_inputs(input) if row["id"] in done)
        run_id = new_run_id()
        if engine == "local":
            from datamint_core.batch._local import run_local

            bar = Progress(total - skipped, enabled=progress)
            try:
                run_local(
                    model_uri,
                    pending,
                    output,
                    params,
                    workers=workers,
                    rows_per_part=rows_per_part,
                    run_id=run_id,
                    progress=bar,
                    expected_rows=total - skipped,
                    threads=threads_per_worker,
                )
            finally:
                bar.close()
            succeeded, failed = bar.done - bar.failed, bar.failed
        else:
            from datamint_core.batch._spark import local_session, run_spark

            if spark is None:
                from pyspark.sql import SparkSession

                spark = SparkSession.getActiveSession() or local_session(workers)
            succeeded, failed = run_spark(
                model_uri,
                pending,
                output,
                params,
                spark=spark,
                rows_per_part=rows_per_part,
                run_id=run_id,
            )
    return BatchReport(output, total, skipped, succeeded, failed, time.monotonic() - started)
