"""``datamint batch``: registered on the ``datamint`` command by :func:`add_batch_command`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from datamint_core._env import DATAMINT_BATCH_THREADS_PER_WORKER
from datamint_core._numbers import COUNT, argument_type

#: Exit code when the job ran but at least one row failed (recorded in the output).
EXIT_ROWS_FAILED = 3


def add_batch_command(commands: Any, model_argument: Any, mode_arguments: Any) -> None:
    """Add the ``batch`` subcommand to the ``datamint`` command's subparsers.

    Args:
        commands: the ``add_subparsers()`` object of the ``datamint`` parser.
        model_argument: adds ``-m/--model-uri`` to a parser.
        mode_arguments: adds ``--mode`` and ``--param`` to a parser.
    """
    batch = commands.add_parser(
        "batch",
        help="predict on every study of a directory or manifest; write Parquet",
        description="Predict on every study of INPUT (a directory of studies: DICOM series "
        "directories, NIfTI, images, .npy/.npz; or a manifest table: .parquet, .csv, .jsonl "
        "with a 'path' column) and write OUTPUT, a Parquet dataset with one row per study "
        "(id, path, status, error, annotations JSON, mask_file, num_annotations) and the "
        "masks as .npz files under OUTPUT/_masks. Parts are committed atomically; rerunning "
        "into the same OUTPUT skips done rows and retries failed ones.",
        epilog=f"Exit codes: 0 every row ok, {EXIT_ROWS_FAILED} the job finished but some rows "
        "failed (their errors are in OUTPUT), 1 runtime failure (the model cannot load, the "
        "input cannot be read, another job is writing OUTPUT right now: the same command "
        "works once it is done), 2 usage error (bad flags, an INPUT that is no directory of "
        "studies or valid manifest, an OUTPUT holding another model's or other params' "
        "results: the command itself must change).",
    )
    model_argument(batch)
    batch.add_argument("-i", "--input", required=True, help="directory of studies or manifest")
    batch.add_argument("-o", "--output", required=True, help="output directory (Parquet)")
    mode_arguments(batch)
    batch.add_argument(
        "--engine",
        choices=["local", "spark"],
        default="local",
        help="local: a process pool (default); spark: pyspark, datamint[spark]",
    )
    batch.add_argument(
        "--workers",
        type=argument_type(COUNT),
        help="local processes (default: one per two CPU cores), or N of local[N] for spark "
        "(default: CPU count)",
    )
    batch.add_argument(
        "--threads-per-worker",
        type=argument_type(COUNT),
        help=DATAMINT_BATCH_THREADS_PER_WORKER.help(),
    )
    batch.add_argument(
        "--rows-per-part", type=argument_type(COUNT), default=64, help="rows per Parquet part (64)"
    )
    batch.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    batch.set_defaults(run=run_batch_command)


def run_batch_command(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Run the job the arguments describe; print the report; return the exit code.

    Raises:
        UsageError: INPUT cannot be listed as studies, or OUTPUT holds another job's results
            (exit 2: the command must change; rerunning it as is cannot succeed).
    """
    from datamint_core.batch import run_batch
    from datamint_core.cli import UsageError
    from datamint_core.errors import BatchInputError, OutputMismatchError

    try:
        report = run_batch(
            args.model_uri,
            args.input,
            args.output,
            params,
            engine=args.engine,
            workers=args.workers,
            rows_per_part=args.rows_per_part,
            progress=not args.no_progress,
            threads_per_worker=args.threads_per_worker,
        )
    except (BatchInputError, OutputMismatchError) as error:
        raise UsageError(str(error)) from error
    print(report)
    if not report.ok:
        print(
            f"datamint batch: {report.failed} row(s) failed; their errors are in the "
            f"'error' column of {report.output}; rerun the same command to retry them.",
            file=sys.stderr,
        )
        return EXIT_ROWS_FAILED
    return 0

