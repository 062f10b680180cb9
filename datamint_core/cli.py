"""The ``datamint`` command: predict, serve, inspect, validate and package Datamint models.

Examples::

    datamint info -m models:/liver-seg/3
    datamint predict -m ./model -i ct.npy -o out.json --mode slice --param slice_index=3
    datamint serve -m models:/liver-seg/3 --port 8080 --timeout 30 --max-request-size 1G
    datamint validate -m ./model -i sample.json
    datamint generate-dockerfile -m models:/liver-seg/3 -o build/
    datamint batch -m models:/liver-seg/3 -i /data/cohort -o /data/out --mode volume
    datamint evaluate -m models:/liver-seg/3 --project /data/Task03_Liver -o /data/eval

Exit codes: 0 success, 1 a runtime failure (the model cannot load, the input cannot be
served, validation failed), 2 a usage error (bad arguments), 3 a batch job in which some rows
failed (``datamint batch``; the errors are in its output) or cases that could not be scored
(``datamint evaluate``). Errors are one line on stderr.
Heavy modules (mlflow, FastAPI) are imported only by the subcommand that needs them, so
``--help`` is instant.

Why one module of some 540 lines: it is the argument parser of every subcommand and the few
lines each takes to hand its arguments to the library; the work itself lives in the modules
it calls (``batch``, ``evaluation``, ``cli_predict``, ``serving``), each imported only there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from datamint_core import _env
from datamint_core._numbers import COUNT, PORT, argument_type

PROG = "datamint"
_INPUT_TYPES = {".json": "json", ".npy": "npy", ".npz": "npz"}
# Medical image files, read by datamint_core.io (a directory is a DICOM series).
_IMAGE_FILE = "image"
_IMAGE_SUFFIXES = (".dcm", ".dicom", ".nii", ".nii.gz", ".png", ".jpg", ".jpeg")


#: Exit code of a usage error: bad flags (argparse's own convention) or a request that cannot
#: be done as given, e.g. other params into an existing batch output.
EXIT_USAGE = 2


class _RuntimeFailure(Exception):
    """A failure to report in one line and exit 1."""


class UsageError(Exception):
    """A command line that cannot be run as given: reported in one line, exit 2."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``datamint`` command line; return its exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        params = _params(args, parser) if hasattr(args, "param") else {}
        return int(args.run(args, params) or 0)
    except KeyboardInterrupt:
        return 130
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # every failure becomes one readable line and exit code 1
        message = getattr(error, "message", None) or str(error) or type(error).__name__
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    from datamint_core.version import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Predict with, serve, inspect, validate and package Datamint MLflow models.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 usage error.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    predict = commands.add_parser(
        "predict",
        help="predict on a file and write the annotations (JSON, NIfTI, DICOM SEG, picture)",
        description="Predict on a JSON request (any body POST /invocations accepts), an "
        ".npy/.npz file of pixel data, or a medical image (DICOM file or series directory, "
        'NIfTI, PNG, JPEG), and write {"predictions": ...} as JSON, the masks as a NIfTI '
        "label map (.nii.gz) or a DICOM SEG (.dcm, for a DICOM input), and optionally an "
        "overlay picture.",
    )
    _model_argument(predict)
    predict.add_argument(
        "-i",
        "--input",
        action="append",
        metavar="[CHANNEL=]PATH",
        help="input: .json, .npy, .npz, a DICOM file or series directory, .nii/.nii.gz, "
        ".png/.jpg; stdin (JSON or npy/npz) when left out. A multi-modal case: one "
        "-i CHANNEL=PATH per co-registered channel, in channel order "
        "(-i t1=t1.nii.gz -i t2=t2_series/)",
    )
    predict.add_argument(
        "--fourth-axis",
        choices=["auto", "channels", "time"],
        default="auto",
        help="how a 4-D NIfTI's fourth axis is read: auto (time when the header gives it a "
        "time unit, else channels), channels or time (default: auto)",
    )
    predict.add_argument(
        "-o",
        "--output",
        help="output: .json (the predictions), .nii/.nii.gz (label map with the input's "
        "affine) or .dcm (DICOM SEG referencing the input series); stdout JSON when left out",
    )
    predict.add_argument(
        "--overlay", metavar="PNG", help="also draw the prediction over the image (a slice)"
    )
    predict.add_argument(
        "-t",
        "--content-type",
        choices=sorted({*_INPUT_TYPES.values(), _IMAGE_FILE}),
        help="input format; by default from the input's suffix (json for stdin)",
    )
    _mode_arguments(predict)
    predict.set_defaults(run=_predict)

    serve = commands.add_parser(
        "serve",
        help="serve the model over HTTP",
        description="Serve the model: GET /ping /health /version /metadata, POST /invocations. "
        "SIGTERM stops accepting connections, finishes in-flight requests and exits 0.",
    )
    _model_argument(serve)
    serve.add_argument("--host", default="127.0.0.1", help="interface (default: 127.0.0.1)")
    serve.add_argument(
        "-p", "--port", type=argument_type(PORT), default=8080, help="port (default: 8080)"
    )
    serve.add_argument("-w", "--workers", type=argument_type(COUNT), default=1, help="processes")
    for flag, variable in _SERVE_LIMITS:
        serve.add_argument(
            flag, dest=_setting(variable), type=argument_type(variable.kind), help=variable.help()
        )
    serve.add_argument(
        "--allow-path-dir",
        action="append",
        metavar="DIR",
        help=_env.DATAMINT_SERVE_ALLOW_PATH_DIRS.help(),
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--enable-mlserver",
        action="store_true",
        help="serve with MLServer and the datamint runtime (Open Inference Protocol V2 over "
        "REST on --port and gRPC on --grpc-port; needs the [mlserver] extra) instead",
    )
    serve.add_argument(
        "--grpc-port", type=argument_type(PORT), help="with --enable-mlserver (default: 8081)"
    )
    serve.add_argument(
        "--metrics-port", type=argument_type(PORT), help="with --enable-mlserver (default: 8082)"
    )
    serve.set_defaults(run=_serve)

    info = commands.add_parser(
        "info",
        help="show the model's datamint metadata",
        description="Show the task type, prediction modes and their params, settings, "
        "annotation specs and linked models recorded in the model's MLmodel file.",
    )
    _model_argument(info)
    info.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    info.set_defaults(run=_info)

    validate = commands.add_parser(
        "validate",
        help="check the model's metadata and run a smoke prediction",
        description="Check metadata and run one prediction (on a synthetic input unless -i "
        "is given). Exits 1 when a check fails.",
    )
    _model_argument(validate)
    validate.add_argument("-i", "--input", help="sample input (.json, .npy or .npz)")
    validate.add_argument("--json", action="store_true", help="print the report as JSON")
    _mode_arguments(validate)
    validate.set_defaults(run=_validate)

    dockerfile = commands.add_parser(
        "generate-dockerfile",
        help="write a Dockerfile that serves the model",
        description="Copy the model into DIR and write a Dockerfile beside it: the model's "
        "requirements only (no torch unless the model needs it), non-root, with a health check.",
    )
    _model_argument(dockerfile)
    dockerfile.add_argument("-o", "--output-dir", required=True, help="build context to write")
    dockerfile.add_argument("--base-image", help="default: python:<model's version>-slim")
    dockerfile.add_argument(
        "--enable-mlserver",
        action="store_true",
        help="serve with MLServer and the datamint runtime (V2; writes model-settings.json)",
    )
    dockerfile.set_defaults(run=_generate_dockerfile)

    from datamint_core.batch._cli import add_batch_command
    from datamint_core.evaluation._cli import add_evaluate_command
    from datamint_core.platform.cli import add_config_command

    add_batch_command(commands, _model_argument, _mode_arguments)
    add_evaluate_command(commands, _mode_arguments)
    add_config_command(commands)
    return parser


#: ``datamint serve`` limit flags and the variable each falls back to; the variable holds the
#: kind of value, the default and the help (datamint_core._env), the ServerConfig field is
#: the variable's name without ``DATAMINT_SERVE_``.
_SERVE_LIMITS = (
    ("--timeout", _env.DATAMINT_SERVE_REQUEST_TIMEOUT),
    ("--max-request-size", _env.DATAMINT_SERVE_MAX_REQUEST_SIZE),
    ("--max-decoded-bytes", _env.DATAMINT_SERVE_MAX_DECODED_BYTES),
    ("--max-slices", _env.DATAMINT_SERVE_MAX_SLICES),
    ("--max-json-values", _env.DATAMINT_SERVE_MAX_JSON_VALUES),
    ("--read-timeout", _env.DATAMINT_SERVE_READ_TIMEOUT),
    ("--limit-concurrency", _env.DATAMINT_SERVE_LIMIT_CONCURRENCY),
    ("--keep-alive-timeout", _env.DATAMINT_SERVE_KEEP_ALIVE_TIMEOUT),
    ("--graceful-timeout", _env.DATAMINT_SERVE_GRACEFUL_TIMEOUT),
    ("--max-header-size", _env.DATAMINT_SERVE_MAX_HEADER_SIZE),
    ("--max-parts", _env.DATAMINT_SERVE_MAX_PARTS),
)


def _setting(variable: str) -> str:
    """The ServerConfig field a ``DATAMINT_SERVE_*`` variable sets."""
    return variable.removeprefix("DATAMINT_SERVE_").lower()


def _model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-m",
        "--model-uri",
        required=True,
        help="model URI: a local directory, runs:/..., models:/name/1, models:/name@alias",
    )


def _mode_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", help="prediction mode (image, slice, volume, ...)")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a mode param, repeatable; VALUE is read as JSON when it parses (3, 0.5, true)",
    )
    parser.add_argument(
        "--prompts",
        metavar="JSON_FILE",
        help="prompts for an interactive model: a JSON file of points, boxes and scribbles "
        "per label (the `prompts` param; see datamint_core.prompts)",
    )


def _params(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in args.param:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            parser.error(f"--param {item!r} is not KEY=VALUE (e.g. --param slice_index=3)")
        try:
            params[key.strip()] = json.loads(raw)
        except ValueError:
            params[key.strip()] = raw
    if args.mode:
        params["mode"] = args.mode
    if getattr(args, "prompts", None):
        try:
            params["prompts"] = json.loads(Path(args.prompts).read_text())
        except (OSError, ValueError) as error:
            parser.error(f"--prompts {args.prompts!r} is not a readable JSON file: {error}")
    return params


def _content_type(path: str | None, explicit: str | None) -> str:
    if explicit:
        return explicit
    if path is None:
        return "json"
    if Path(path).is_dir() or path.lower().endswith(_IMAGE_SUFFIXES):
        return _IMAGE_FILE
    suffix = Path(path).suffix.lower()
    if suffix not in _INPUT_TYPES:
        raise _RuntimeFailure(
            f"Cannot tell the format of {path!r} from its suffix; use .json, .npy, .npz, "
            "a DICOM file or series directory, .nii/.nii.gz, .png or .jpg, or give "
            "--content-type."
        )
    return _INPUT_TYPES[suffix]


def _predict(args: argparse.Namespace, params: dict[str, Any]) -> int:
    from datamint_core.cli_predict import output_format, predict_file

    source = _predict_source(args.input)
    # A multi-channel case ({channel: path}) is always read as image files.
    content_type = None if isinstance(source, dict) else _content_type(source, args.content_type)
    wants_files = output_format(args.output) != ".json" or args.overlay is not None
    if isinstance(source, dict) or content_type == _IMAGE_FILE or (
        wants_files and content_type in ("npy", "npz")
    ):
        if source is None:
            raise _RuntimeFailure("A medical image input is read from a file: give -i PATH.")
        predict_file(
            args.model_uri,
            source,
            args.output,
            overlay_path=args.overlay,
            params=params,
            fourth_axis=args.fourth_axis,
            report=_tell,
        )
        return 0
    if wants_files:
        raise _RuntimeFailure(
            "Masks (.nii.gz, .dcm) and --overlay are written for an image file input "
            "(DICOM, NIfTI, PNG, JPEG, .npy); a JSON request's result is written as JSON."
        )
    from datamint_core.serving.backend import DatamintBackend

    DatamintBackend({}).predict(args.model_uri, source, args.output, content_type, params)
    if args.output is not None:
        from datamint_core.cli_predict import describe_predictions, wrote

        predictions = json.loads(Path(args.output).read_bytes())["predictions"]
        _tell(wrote(args.output, describe_predictions(predictions)))
    return 0


def _tell(line: str) -> None:
    """Say on stderr what the command did, so stdout stays the result alone."""
    print(line, file=sys.stderr)


_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


def _predict_source(inputs: list[str] | None) -> str | dict[str, str] | None:
    """One input path, or ``{channel: path}`` for ``-i t1=a.nii.gz -i t2=b.nii.gz``."""
    if not inputs:
        return None
    if len(inputs) == 1 and not _is_channel_input(inputs[0]):
        return inputs[0]
    channels: dict[str, str] = {}
    for item in inputs:
        if not _is_channel_input(item):
            raise _RuntimeFailure(
                f"-i {item!r}: with several inputs, each is one channel of a multi-modal case, "
                "given as CHANNEL=PATH (e.g. -i t1=t1.nii.gz -i t2=t2.nii.gz); CHANNEL is a "
                "name of letters, digits and _.+- (at most 64)."
            )
        name, _, path = item.partition("=")
        if name in channels:
            raise _RuntimeFailure(f"-i names the channel {name!r} twice; name each channel once.")
        channels[name] = path
    return channels


def _is_channel_input(item: str) -> bool:
    name, sep, path = item.partition("=")
    return bool(sep and path and _CHANNEL_NAME.match(name)) and not Path(item).exists()


def _serve(args: argparse.Namespace, params: dict[str, Any]) -> int:
    import os

    if args.enable_mlserver:
        return _serve_mlserver(args)

    import uvicorn

    from datamint_core.linked_models import held_model_dir
    from datamint_core.serving.app import fit_to_open_files, http_protocol
    from datamint_core.serving.config import ServerConfig

    config = ServerConfig.resolve(
        args.allow_path_dir,
        **{_setting(variable): getattr(args, _setting(variable)) for _, variable in _SERVE_LIMITS},
    )
    # As many connections as the descriptors allow, and a backlog that cannot exhaust them.
    limit_concurrency, backlog = fit_to_open_files(config.limit_concurrency)
    # Through the artifact cache, once, before any worker starts: N workers load one copy,
    # held until the server exits, so that a cache clear elsewhere leaves it in place.
    model_dir = _SERVER_HOLDS.enter_context(held_model_dir(args.model_uri))
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "access_log": args.access_log,
        "log_level": "info",
        "http": http_protocol(config.read_timeout),
        "limit_concurrency": limit_concurrency,
        "backlog": backlog,
        "timeout_keep_alive": config.keep_alive_timeout,
        "timeout_graceful_shutdown": config.graceful_timeout,
        "h11_max_incomplete_event_size": config.max_header_size,
    }
    # uvicorn drains in-flight requests on SIGTERM, then raises the signal again to end the
    # process; this handler turns that into a clean return (exit code 0). It is installed
    # once the model is loaded, so that SIGTERM during a long load still stops the process.
    if args.workers == 1:
        from datamint_core.serving.app import create_app

        app = create_app(model_dir, config)
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        uvicorn.run(app, **options)
    else:
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
        os.environ.update({_env.DATAMINT_SERVE_MODEL_URI.name: model_dir, **config.to_env()})
        uvicorn.run(
            "datamint_core.serving.app:create_app_from_env",
            factory=True,
            workers=args.workers,
            **options,
            **_worker_healthcheck_option(uvicorn.run),
        )
    _exit_without_teardown()


#: Seconds a worker may take to answer uvicorn's supervisor before it is killed and replaced.
#: uvicorn's default (5 s) is shorter than a worker's start on a busy node: importing numpy,
#: pandas and MLflow and loading the model holds the GIL in long stretches, the ping goes
#: unanswered, and the supervisor kills and restarts workers in a loop that never serves.
WORKER_HEALTHCHECK_TIMEOUT_S = 60


def _worker_healthcheck_option(run: Any) -> dict[str, int]:
    """``timeout_worker_healthcheck`` for ``uvicorn.run`` where that uvicorn has it (0.30+)."""
    import inspect

    if "timeout_worker_healthcheck" in inspect.signature(run).parameters:
        return {"timeout_worker_healthcheck": WORKER_HEALTHCHECK_TIMEOUT_S}
    return {}


def _serve_mlserver(args: argparse.Namespace) -> int:
    """``mlserver start`` with the datamint runtime, as a child; SIGTERM is passed on."""
    import subprocess

    from datamint_core.serving.backend import mlserver_command

    command = mlserver_command(
        args.model_uri, args.host, args.port, args.grpc_port, args.metrics_port
    )
    process = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda signum, frame: process.terminate())
    return 0 if process.wait() == 0 else 1


#: What the server process holds for its whole life (released when the process ends).
_SERVER_HOLDS = contextlib.ExitStack()


def _exit_without_teardown() -> NoReturn:
    """End the server process now that uvicorn is done: run the atexit handlers (temporary
    model copies, log flushing) but skip the interpreter's module teardown, which takes over
    a second with mlflow, pandas and FastAPI loaded and would stretch every SIGTERM."""
    import atexit
    import os

    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _info(args: argparse.Namespace, params: dict[str, Any]) -> int:
    from datamint_core.serving.backend import flavor_config

    block = flavor_config(args.model_uri)
    if args.json:
        print(json.dumps(block, indent=2, sort_keys=True))
        return 0
    print(f"model:           {args.model_uri}")
    print(f"class:           {block.get('model_class')}")
    print(f"datamint:        {block.get('datamint_version')}")
    print(f"task type:       {block.get('task_type') or '(not set)'}")
    print("modes:")
    mode_params = block.get("mode_params") or {}
    for mode in block.get("supported_modes") or []:
        info = mode_params.get(mode) or {}
        required = set(info.get("required") or [])
        names = [f"{name}{'' if name in required else '?'}" for name in info.get("params") or []]
        kinds = info.get("prompts")
        prompts = f"  prompts: {', '.join(kinds)}" if kinds else ""
        print(f"  {mode:<14} {', '.join(names) if names else '(no params)'}{prompts}")
    settings = block.get("model_settings") or {}
    print("settings:        " + (", ".join(f"{k}={v}" for k, v in settings.items()) or "(none)"))
    specs = block.get("annotation_specs")
    print("annotations:" + ("" if specs else "     (not declared)"))
    for spec in specs or []:
        print(f"  {spec.get('identifier')}: {spec.get('type')}")
    linked = block.get("linked_models") or {}
    print("linked models:   " + (", ".join(f"{k} -> {v}" for k, v in linked.items()) or "(none)"))
    return 0


def _validate(args: argparse.Namespace, params: dict[str, Any]) -> int:
    from datamint_core.validation import validate_model

    sample = None
    if args.input is not None:
        from datamint_core.serving.payload import parse_json_envelope
        from datamint_core.wire import arrays_to_records

        content_type = _content_type(args.input, None)
        if content_type == "json":
            sample, request_params = parse_json_envelope(Path(args.input).read_text())
            params = {**request_params, **params}
        else:
            sample = arrays_to_records(args.input, content_type)
    report = validate_model(args.model_uri, sample, params or None)
    print(json.dumps(report.to_dict(), indent=2) if args.json else str(report))
    return 0 if report.ok else 1


def _generate_dockerfile(args: argparse.Namespace, params: dict[str, Any]) -> int:
    from datamint_core.serving.backend import DatamintBackend

    DatamintBackend({}).generate_dockerfile(
        args.model_uri,
        args.output_dir,
        base_image=args.base_image,
        enable_mlserver=args.enable_mlserver,
    )
    print(f"wrote {Path(args.output_dir) / 'Dockerfile'} and the model beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
