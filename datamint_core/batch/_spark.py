"""The Spark engine: ``mapInPandas`` over the input rows, pixels read on the executors.

The driver streams the input listing (paths and descriptors, never pixels) into a staging
Parquet file in the output directory, minus the ids already done; Spark reads it, spreads
the rows over partitions, and each executor Python worker loads the model once (a
module-level cache keyed by URI, kept across tasks while Spark reuses the worker), reads each
study from its path, predicts, writes masks, and commits a Parquet part per
``rows_per_part`` rows with the same atomic writer as the local engine. Part names are
fixed by run, partition and sequence, so a retried or speculative task overwrites its own
parts. Only one ``(ok, failed)`` count per part comes back to the driver.

The output directory (and the studies' paths) must be reachable from every executor: a
shared file system on a cluster, any local directory with ``local[N]``.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from datamint_core._extras import require
from datamint_core.batch._rows import STATUS_FAILED, predict_row
from datamint_core.batch._store import STAGING_PREFIX, commit_part, part_name, require_pyarrow
from datamint_core.wire import plain_record

#: Executor Python workers keep their models here, across tasks.
_MODELS: dict[str, Any] = {}
_SUMMARY_SCHEMA = "ok long, failed long"


def require_pyspark() -> Any:
    """Import pyspark, or say which extra brings it."""
    return require("pyspark", "The Spark engine")


def local_session(workers: int) -> Any:
    """A ``local[workers]`` SparkSession for one machine (the UI off, few shuffle partitions).

    Its Python workers run this interpreter (unless ``PYSPARK_PYTHON`` says otherwise), so
    they import the same datamint and the model's code.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    # pyspark picks the workers' interpreter from this variable when the context starts.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (
        SparkSession.builder.master(f"local[{workers}]")
        .appName("datamint-batch")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", str(max(2 * workers, 2)))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )


def run_spark(
    model_uri: str,
    rows: Iterable[dict[str, Any]],
    output_dir: str,
    params: dict[str, Any],
    *,
    spark: Any,
    rows_per_part: int,
    run_id: str,
) -> tuple[int, int]:
    """Predict on ``rows`` with Spark; return ``(ok, failed)`` row counts."""
    require_pyspark()
    # Parquet readers skip names starting with "_", so the staging directory stays out of
    # the results while the file in it keeps a name Spark reads.
    staging_dir = os.path.join(output_dir, f"{STAGING_PREFIX}{run_id}")
    staging = os.path.join(staging_dir, "rows.parquet")
    os.makedirs(staging_dir, exist_ok=True)
    try:
        pending = _stage_rows(rows, staging)
        if pending == 0:
            return 0, 0
        parallelism = spark.sparkContext.defaultParallelism
        partitions = min(pending, max(4 * parallelism, math.ceil(pending / rows_per_part)))
        predict = functools.partial(
            _predict_partition,
            model_uri,
            params,
            os.path.abspath(output_dir),
            run_id,
            rows_per_part,
        )
        # One small summary row per committed part comes back: no shuffle, no ids.
        parts = (
            spark.read.parquet(os.path.abspath(staging))
            .repartition(partitions)
            .mapInPandas(predict, schema=_SUMMARY_SCHEMA)
            .collect()
        )
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return sum(part["ok"] for part in parts), sum(part["failed"] for part in parts)


def _stage_rows(rows: Iterable[dict[str, Any]], staging: str) -> int:
    """Stream rows into a Parquet file, a batch at a time; return how many."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("path", pa.string()),
            ("kind", pa.string()),
            ("spacing", pa.list_(pa.float64())),
            ("affine", pa.list_(pa.list_(pa.float64()))),
            ("modality", pa.string()),
            ("filename", pa.string()),
            ("mimetype", pa.string()),
            ("metadata", pa.string()),
            ("channels", pa.string()),
            ("prompts", pa.string()),
        ]
    )
    count = 0
    batch: list[dict[str, Any]] = []
    with pq.ParquetWriter(staging, schema) as writer:
        for row in rows:
            batch.append(row)
            if len(batch) == 1024:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch.clear()
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


def _predict_partition(
    model_uri: str,
    params: dict[str, Any],
    output_dir: str,
    run_id: str,
    rows_per_part: int,
    batches: Iterator[Any],
) -> Iterator[Any]:
    """Runs on an executor: predict on a partition's rows, commit parts, yield summaries."""
    import pandas as pd
    from pyspark import TaskContext

    task = f"s{TaskContext.get().partitionId():05d}"
    model = _cached_model(model_uri)
    buffer: list[dict[str, Any]] = []
    sequence = 0

    def flush() -> Any:
        nonlocal sequence
        commit_part(output_dir, part_name(run_id, task, sequence), buffer)
        sequence += 1
        failed = sum(row["status"] == STATUS_FAILED for row in buffer)
        summary = pd.DataFrame({"ok": [len(buffer) - failed], "failed": [failed]})
        buffer.clear()
        return summary

    for frame in batches:
        for record in frame.to_dict(orient="records"):
            # Arrow's cells (missing ones None or NaN, lists arrays) made plain as every
            # table row is; a missing cell is None.
            row = dict.fromkeys(record) | plain_record(record, table=True)
            buffer.append(predict_row(model, row, params, output_dir))
            if len(buffer) >= rows_per_part:
                yield flush()
    if buffer:
        yield flush()


def _cached_model(model_uri: str) -> Any:
    if model_uri not in _MODELS:
        from datamint_core.flavor import load_model

        _MODELS[model_uri] = load_model(model_uri)
    return _MODELS[model_uri]
