"""``datamint evaluate``: registered on the ``datamint`` command by :func:`add_evaluate_command`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from datamint_core._numbers import COUNT, MILLIMETRES, argument_type
from datamint_core.batch._cli import EXIT_ROWS_FAILED


def add_evaluate_command(commands: Any, mode_arguments: Any) -> None:
    """Add the ``evaluate`` subcommand to the ``datamint`` command's subparsers."""
    evaluate = commands.add_parser(
        "evaluate",
        help="score segmentations against labels: Dice, IoU, HD95, ASSD, surface Dice",
        description="Score a model's segmentations against reference label maps, per case and "
        "per label: Dice, IoU, 95th-percentile Hausdorff distance, average symmetric surface "
        "distance and normalized surface Dice (mm, spacing-aware; MONAI's values). Either "
        "a `datamint batch` OUTPUT (--predictions) with its label maps (--labels, and the "
        "label names: --label or --labels-json), or a model (-m) on a project directory "
        "(--project: Decathlon or nnU-Net v2 layout, predicted with the batch engine). "
        "Writes OUTPUT/metrics.csv (one row per case) and OUTPUT/summary.json.",
        epilog=f"Exit codes: 0 every case scored, {EXIT_ROWS_FAILED} some cases could not be "
        "scored (their errors are in metrics.csv), 1 runtime failure, 2 usage error.",
    )
    evaluate.add_argument("-o", "--output", required=True, help="directory for the results")
    evaluate.add_argument("--predictions", help="a `datamint batch` output directory")
    evaluate.add_argument(
        "--labels", help="with --predictions: the label maps (a directory or a manifest)"
    )
    evaluate.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="VALUE=NAME",
        help="a label value and the name the model gives its masks, repeatable (1=liver)",
    )
    evaluate.add_argument("--labels-json", help="the label names from a dataset.json")
    evaluate.add_argument(
        "-m", "--model-uri", help="with --project: the model to predict with (any model URI)"
    )
    evaluate.add_argument("--project", help="a project directory (or name under "
                          "DATAMINT_PROJECTS_DIR) with a dataset.json")
    mode_arguments(evaluate)
    evaluate.add_argument(
        "--engine", choices=["local", "spark"], default="local",
        help="with --project: the batch engine that predicts (local: a process pool)",
    )
    evaluate.add_argument(
        "--tolerance-mm", type=argument_type(MILLIMETRES), default=1.0,
        help="the normalized surface Dice's tolerance in mm (default 1)",
    )
    evaluate.add_argument(
        "--workers", type=argument_type(COUNT), help="processes scoring cases (default: CPU count)"
    )
    evaluate.set_defaults(run=run_evaluate_command)


def run_evaluate_command(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Run the evaluation the arguments describe; print the report; return the exit code."""
    from datamint_core.cli import UsageError
    from datamint_core.errors import BatchInputError, EvaluationInputError, OutputMismatchError
    from datamint_core.evaluation import (
        evaluate_predictions,
        evaluate_project,
        labels_from_file,
        parse_labels,
    )

    try:
        if args.project is not None:
            if args.predictions or args.labels or args.label or args.labels_json:
                raise UsageError(
                    "--project reads the labels and their names from the project: give "
                    "--project with -m, or --predictions with --labels, not both."
                )
            if not args.model_uri:
                raise UsageError("--project needs the model to evaluate: -m MODEL_URI.")
            report = evaluate_project(
                args.model_uri, args.project, args.output, params,
                tolerance_mm=args.tolerance_mm, engine=args.engine, workers=args.workers,
            )
        elif args.predictions is not None:
            if args.model_uri or params:
                raise UsageError(
                    "--predictions scores a finished `datamint batch` output; -m, --mode and "
                    "--param go with --project."
                )
            if not args.labels:
                raise UsageError("--predictions needs the label maps: --labels DIR_OR_MANIFEST.")
            if bool(args.label) == bool(args.labels_json):
                raise UsageError(
                    "Name the labels the model's masks are matched to: --label VALUE=NAME "
                    "(repeatable) or --labels-json dataset.json, one of the two."
                )
            labels = (labels_from_file(args.labels_json) if args.labels_json
                      else parse_labels(_label_pairs(args.label)))
            report = evaluate_predictions(
                args.predictions, args.labels, args.output, labels,
                tolerance_mm=args.tolerance_mm, workers=args.workers,
            )
        else:
            raise UsageError(
                "Give what to evaluate: --predictions BATCH_OUTPUT --labels LABELS, or "
                "-m MODEL_URI --project PROJECT."
            )
    except (EvaluationInputError, BatchInputError, OutputMismatchError) as error:
        raise UsageError(str(error)) from error
    print(report)
    if not report.ok:
        print(
            f"datamint evaluate: {report.failed} case(s) could not be scored; their errors are "
            f"in the 'error' column of {report.output}/metrics.csv.",
            file=sys.stderr,
        )
        return EXIT_ROWS_FAILED
    return 0


def _label_pairs(items: list[str]) -> dict[str, str]:
    from datamint_core.cli import UsageError

    pairs: dict[str, str] = {}
    for item in items:
        value, separator, name = item.partition("=")
        if not separator or not value.strip().isdigit() or not name.strip():
            raise UsageError(f"--label {item!r} is not VALUE=NAME (e.g. --label 1=liver).")
        pairs[value.strip()] = name.strip()
    return pairs
