"""Batch inference on Spark: ``datamint batch --engine spark`` against a hand-written job.

Three figures, each from Spark sessions started in fresh processes (one SparkContext per
process):

1. throughput of ``run_batch(engine="spark")`` on ``local[2]`` vs a hand-written
   ``mlflow.pyfunc.spark_udf`` job over the same rows (read the manifest, score with
   ``result_type="string"``, write Parquet), interleaved, after a warm-up of each.
   Target: >= 1x.
2. ``local[2]`` vs ``local[1]`` for the Spark engine. Target: >= 1.6x (needs 2 free cores).
3. driver memory (peak RSS of the driver's Python process and of its JVM) while the row
   count grows 10x. Target: flat.

Everything is loopback: studies are ``.npy`` volumes in a temporary directory.

    .venv/full/bin/python bench/batch_spark.py [--rows 160] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import Summary, print_header, print_table  # noqa: E402


def make_inputs(root: Path, rows: int, shape: tuple[int, int, int]) -> Path:
    """Write ``rows`` volumes and a Parquet manifest of them; return the manifest."""
    import pandas as pd

    studies = root / f"studies-{rows}-{'x'.join(map(str, shape))}"
    studies.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(rows):
        path = studies / f"ct-{index:05d}.npy"
        if not path.exists():
            np.save(path, rng.random(shape, dtype=np.float32))
    manifest = root / f"manifest-{rows}-{'x'.join(map(str, shape))}.parquet"
    pd.DataFrame(
        {
            "id": [f"ct-{i:05d}" for i in range(rows)],
            "path": [str(studies / f"ct-{i:05d}.npy") for i in range(rows)],
            "kind": ["volume"] * rows,
        }
    ).to_parquet(manifest)
    return manifest


def child(args: argparse.Namespace) -> None:
    """One Spark session: time the jobs asked for, print one JSON line."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent)])
    from datamint_core.batch import run_batch
    from datamint_core.batch._spark import local_session

    spark = local_session(args.cores)
    spark.sparkContext.setLogLevel("ERROR")
    manifest = Path(args.manifest)
    scratch = Path(args.scratch)
    partitions = 4 * args.cores
    times: dict[str, list[float]] = {"engine": [], "spark_udf": []}

    def engine(output: Path) -> float:
        started = time.perf_counter()
        report = run_batch(args.model, manifest, output, engine="spark", spark=spark,
                           progress=False)
        assert report.failed == 0 and report.succeeded > 0, report
        return time.perf_counter() - started

    def udf_job(output: Path) -> float:
        import mlflow.pyfunc
        from pyspark.sql.functions import struct

        started = time.perf_counter()
        udf = mlflow.pyfunc.spark_udf(
            spark, args.model, result_type="string", params={"result_format": "json"},
            extra_env={"DATAMINT_SERVE_ALLOW_PATH_DIRS": str(manifest.parent)},
        )
        frame = spark.read.parquet(str(manifest)).repartition(partitions)
        frame.withColumn("annotations", udf(struct("id", "kind", "path"))).write.parquet(
            str(output)
        )
        return time.perf_counter() - started

    jobs = [("engine", engine)] + ([("spark_udf", udf_job)] if args.with_udf else [])
    for repeat in range(args.repeats + 1):  # the first round warms the workers up
        for name, job in jobs:
            output = scratch / f"{name}-{args.cores}-{repeat}"
            shutil.rmtree(output, ignore_errors=True)
            seconds = job(output)
            if repeat:
                times[name].append(seconds)
            shutil.rmtree(output, ignore_errors=True)
    jvm_pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    jvm_peak_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{jvm_pid}/status").read_text().splitlines()
        if line.startswith("VmHWM")
    )
    spark.stop()
    print(json.dumps({
        "times": times,
        "python_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "jvm_peak_mb": jvm_peak_kb / 1024,
    }))


def run_child(model: Path, manifest: Path, scratch: Path, cores: int, repeats: int,
              with_udf: bool) -> dict:
    command = [sys.executable, __file__, "--child", "--model", str(model), "--manifest",
               str(manifest), "--scratch", str(scratch), "--cores", str(cores),
               "--repeats", str(repeats)] + (["--with-udf"] if with_udf else [])
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--with-udf", action="store_true", help=argparse.SUPPRESS)
    for name in ("--model", "--manifest", "--scratch"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from _batch_models import SmoothedThreshold

    from datamint_core import save_model

    print_header("batch inference on Spark: datamint's engine vs a hand-written spark_udf job")
    with tempfile.TemporaryDirectory(prefix="datamint-bench-batch-") as tmp:
        root = Path(tmp)
        model = root / "model"
        save_model(SmoothedThreshold(), model)
        manifest = make_inputs(root, args.rows, (12, 96, 96))

        two = run_child(model, manifest, root, 2, args.repeats, with_udf=True)
        one = run_child(model, manifest, root, 1, args.repeats, with_udf=False)
        rate = {
            "engine local[2]": [args.rows / s for s in two["times"]["engine"]],
            "spark_udf local[2]": [args.rows / s for s in two["times"]["spark_udf"]],
            "engine local[1]": [args.rows / s for s in one["times"]["engine"]],
        }
        print(f"{args.rows} volumes of 12x96x96 float32, each a .npy file read on the executors")
        print_table([(label, Summary.of(v)) for label, v in rate.items()], "rows/s")
        median = {label: Summary.of(v).median for label, v in rate.items()}
        versus_udf = median["engine local[2]"] / median["spark_udf local[2]"]
        scaling = median["engine local[2]"] / median["engine local[1]"]
        print(f"engine vs spark_udf on local[2]: {versus_udf:.2f}x throughput "
              f"(target >= 1x: {'MET' if versus_udf >= 1 else 'NOT MET'})")
        print(f"engine local[2] vs local[1]: {scaling:.2f}x throughput "
              f"(target >= 1.6x: {'MET' if scaling >= 1.6 else 'NOT MET'}; "
              f"load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")

        print()
        print("driver memory while the row count grows 10x (small 4x32x32 volumes)")
        small, large = args.rows * 2, args.rows * 20
        memory = {}
        for rows in (small, large):
            tiny = make_inputs(root, rows, (4, 32, 32))
            memory[rows] = run_child(model, tiny, root, 2, 1, with_udf=False)
        for rows, figures in memory.items():
            print(f"  {rows:>6} rows: driver Python peak {figures['python_peak_mb']:.0f} MB, "
                  f"driver JVM peak {figures['jvm_peak_mb']:.0f} MB")
        growth_py = memory[large]["python_peak_mb"] / memory[small]["python_peak_mb"]
        growth_jvm = memory[large]["jvm_peak_mb"] / memory[small]["jvm_peak_mb"]
        print(f"  10x rows: Python driver {growth_py:.2f}x, JVM driver {growth_jvm:.2f}x "
              f"(target: flat, ~1x)")


if __name__ == "__main__":
    main()
