"""``DatamintBackend``: MLflow's ``FlavorBackend`` interface for the ``datamint`` flavor.

It predicts from a file (or stdin), serves with ``datamint serve``, checks that the current
environment can score a model, and writes or builds a serving image.

Example::

    backend = DatamintBackend(Model.load(path).flavors["datamint"])
    backend.predict(path, "request.json", "predictions.json", "json")
    process = backend.serve(path, port=8080, host="127.0.0.1", timeout=60,
                            enable_mlserver=False, synchronous=False)
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.models.flavor_backend import FlavorBackend
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from datamint_core._extras import missing_extra
from datamint_core._files import write_atomically
from datamint_core.serving.dockerfile import write_dockerfile

_logger = logging.getLogger(__name__)

#: Content types ``predict`` reads.
CONTENT_TYPES = ("json", "npy", "npz")
#: Extras a model class can need, by the package that defines it.
_EXTRA_MODULES = {
    "datamint_torch": ("torch", "torch"),
    "datamint_lightning": ("lightning", "lightning"),
}


class DatamintBackend(FlavorBackend):
    """Local deployment of Datamint models.

    Args:
        config: the model's ``datamint`` flavor block (from its MLmodel file).
        **kwargs: accepted for MLflow's interface (``env_manager``, ...) and ignored: models
            are served in the current environment (:meth:`prepare_env` checks it).
    """

    def __init__(self, config: dict[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(config or {}, **kwargs)

    def predict(
        self,
        model_uri: str,
        input_path: str | None,
        output_path: str | None,
        content_type: str,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Predict on a file (stdin when ``input_path`` is None) and write the JSON answer.

        Args:
            model_uri: the model to load.
            input_path: a JSON request (any envelope ``POST /invocations`` accepts), or an
                ``.npy``/``.npz`` file of pixel data.
            output_path: where to write ``{"predictions": ...}``; stdout when None.
            content_type: ``json``, ``npy`` or ``npz``.
            params: merged over the request's own ``params``.

        Raises:
            MlflowException: an unknown content type.
            ValueError: input the model cannot serve (unknown mode, malformed resource, ...).
        """
        from datamint_core.flavor import load_model
        from datamint_core.serving.payload import (
            RequestError,
            build_resources,
            parse_json_envelope,
            predictions_to_json,
        )
        from datamint_core.wire import arrays_to_records

        if content_type not in CONTENT_TYPES:
            raise MlflowException(
                f"content_type={content_type!r} is not supported; accepted: {list(CONTENT_TYPES)}.",
                INVALID_PARAMETER_VALUE,
            )
        request_params: dict[str, Any] = {}
        try:
            if content_type == "json":
                raw = _read_input(input_path)
                records, request_params = parse_json_envelope(raw)
            elif input_path is None:
                records = arrays_to_records(sys.stdin.buffer, content_type)
            else:
                records = arrays_to_records(input_path, content_type)
            resources = build_resources(records)
        except RequestError as error:
            raise ValueError(error.message) from None
        model = load_model(model_uri)
        body = predictions_to_json(model.predict(resources, {**request_params, **(params or {})}))
        if output_path is None:
            sys.stdout.write(body.decode() + "\n")
            sys.stdout.flush()
        else:
            write_atomically(output_path, body)

    def serve(
        self,
        model_uri: str,
        port: int,
        host: str,
        timeout: int | None,
        enable_mlserver: bool = False,
        synchronous: bool = True,
        stdout: Any = None,
        stderr: Any = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
    ) -> int | subprocess.Popen:
        """Serve the model in a new process: ``datamint serve``, or with ``enable_mlserver``
        ``mlserver start`` and the datamint runtime (V2 over REST on ``port`` and gRPC on
        ``grpc_port``; MLServer's defaults, 8081 and 8082, when not given).

        Returns:
            0 once the server exits cleanly (``synchronous``), else the running ``Popen``.

        Raises:
            MlflowException: ``enable_mlserver`` without the ``[mlserver]`` extra installed,
                or the server exited with an error (``synchronous``).
        """
        if enable_mlserver:
            host = host or "127.0.0.1"
            command = mlserver_command(model_uri, host, port, grpc_port, metrics_port)
        else:
            command = [sys.executable, "-m", "datamint_core.cli", "serve", "-m", model_uri]
            command += ["--host", str(host or "127.0.0.1"), "--port", str(port)]
            if timeout:
                command += ["--timeout", str(timeout)]
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
        if not synchronous:
            return process
        returncode = process.wait()
        if returncode != 0:
            server = "mlserver start" if enable_mlserver else "datamint serve"
            raise MlflowException(f"{server} exited with code {returncode}.")
        return 0

    def prepare_env(self, model_uri: str, capture_output: bool = False) -> list[str]:
        """Check the model's ``requirements.txt`` against this environment.

        Nothing is installed: the model serves in the current environment.

        Returns:
            One line per requirement whose installed version differs (also logged as a
            warning); empty when everything matches.

        Raises:
            MlflowException: a required package is not installed; the message names the
                ``pip install`` command that fixes it.
        """
        from packaging.requirements import InvalidRequirement, Requirement

        from datamint_core.linked_models import held_model_dir

        # Through the artifact cache, where serving the model then finds it.
        with held_model_dir(model_uri) as model_dir:
            try:
                lines = Path(model_dir, "requirements.txt").read_text().splitlines()
            except FileNotFoundError:
                return []  # saved without one: nothing to check
        missing, mismatched = [], []
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            try:
                installed = importlib_metadata.version(requirement.name)
            except importlib_metadata.PackageNotFoundError:
                missing.append(line)
                continue
            if requirement.specifier and installed not in requirement.specifier:
                mismatched.append(f"{requirement.name} {installed} installed, model wants {line}")
        if missing:
            quoted = " ".join(f'"{requirement}"' for requirement in missing)
            raise MlflowException(
                f"The model at {model_uri!r} needs packages this environment lacks: {missing}. "
                f"Install them: pip install {quoted}"
            )
        for line in mismatched:
            _logger.warning("Requirement version differs: %s", line)
        return mismatched

    def generate_dockerfile(
        self,
        model_uri: str,
        output_dir: str,
        install_java: bool = False,
        install_mlflow: bool = False,
        mlflow_home: str | None = None,
        enable_mlserver: bool = False,
        base_image: str | None = None,
    ) -> None:
        """Write a Dockerfile and a copy of the model to ``output_dir``.

        See :mod:`datamint_core.serving.dockerfile` for what the image holds.
        ``install_mlflow`` changes nothing: the model's requirements already pin
        ``mlflow-skinny``.

        With ``enable_mlserver`` the image serves with MLServer and the datamint runtime, from
        a generated ``model-settings.json``.

        Raises:
            MlflowException: ``install_java`` or ``mlflow_home`` given; they do not apply to
                Datamint models.
        """
        import mlflow

        unsupported = {
            "install_java": install_java,
            "mlflow_home": mlflow_home,
        }
        given = [name for name, value in unsupported.items() if value]
        if given:
            raise MlflowException(
                f"{given} not supported for Datamint models: the image installs only the "
                "model's requirements and serves with datamint serve (or MLServer with "
                "enable_mlserver=True).",
                INVALID_PARAMETER_VALUE,
            )
        with tempfile.TemporaryDirectory() as download_dir:
            local_path = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=download_dir
            )
            write_dockerfile(
                local_path, output_dir, base_image=base_image, enable_mlserver=enable_mlserver
            )

    def build_image(
        self,
        model_uri: str,
        image_name: str,
        install_java: bool = False,
        install_mlflow: bool = False,
        mlflow_home: str | None = None,
        enable_mlserver: bool = False,
        base_image: str | None = None,
    ) -> None:
        """Build the serving image with the local Docker engine.

        Raises:
            MlflowException: no Docker engine answers here; the message says to use
                ``generate_dockerfile`` and build where Docker runs.
        """
        docker = shutil.which("docker")
        engine_up = docker is not None and (
            subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0
        )
        if not engine_up:
            raise MlflowException(
                "Cannot build an image: no Docker engine is running here"
                + (" (the docker command is not installed)" if docker is None else "")
                + ". Use generate_dockerfile (command line: datamint generate-dockerfile -m "
                f"{model_uri} -o DIR) and run `docker build -t {image_name} DIR` where Docker runs."
            )
        with tempfile.TemporaryDirectory() as context:
            self.generate_dockerfile(
                model_uri,
                context,
                install_java,
                install_mlflow,
                mlflow_home,
                enable_mlserver,
                base_image,
            )
            subprocess.run([docker, "build", "-t", image_name, context], check=True)

    def can_score_model(self) -> bool:
        """Whether this environment has what the model's class needs (torch for a torch model).

        The reason is logged when it does not.
        """
        model_class = str(self._config.get("model_class") or "")
        package = model_class.split(".", 1)[0]
        if package in _EXTRA_MODULES:
            module, extra = _EXTRA_MODULES[package]
            if importlib.util.find_spec(module) is None:
                missing = missing_extra(f"it needs {module}", extra)
                _logger.warning("Cannot score %s here: %s", model_class, missing)
                return False
        return True


def mlserver_command(
    model_uri: str,
    host: str,
    port: int,
    grpc_port: int | None = None,
    metrics_port: int | None = None,
) -> list[str]:
    """The ``mlserver start`` command serving ``model_uri`` with the datamint runtime.

    Writes ``settings.json`` and ``model-settings.json`` (see
    :func:`datamint_core.serving.dockerfile.mlserver_model_settings`; batching as the model
    declares) to a new temporary directory, removed when this process exits.

    Raises:
        MlflowException: MLServer is not installed; the message names the extra.
    """
    import atexit
    import json
    import os

    executable = Path(sys.executable).with_name("mlserver")
    if not executable.exists():
        found = shutil.which("mlserver")
        if found is None or importlib.util.find_spec("mlserver") is None:
            raise MlflowException(
                str(missing_extra("enable_mlserver=True needs MLServer", "mlserver")),
                INVALID_PARAMETER_VALUE,
            )
        executable = Path(found)
    from datamint_core.linked_models import held_model_dir
    from datamint_core.serving.dockerfile import (
        declared_batch_size,
        mlserver_model_settings,
        model_name_for,
    )

    local = os.path.isdir(model_uri)
    uri = os.path.abspath(model_uri) if local else model_uri
    with held_model_dir(model_uri) as local_path:  # reads the declared batch size
        batch_size = declared_batch_size(local_path)
    # models:/liver-seg/3 -> liver-seg; a directory -> its name
    name = model_name_for(uri if local else uri.split(":", 1)[-1].strip("/").split("/")[0])
    folder = tempfile.mkdtemp(prefix="datamint-mlserver-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    settings: dict[str, Any] = {"host": host, "http_port": int(port), "parallel_workers": 0}
    if grpc_port is not None:
        settings["grpc_port"] = int(grpc_port)
    if metrics_port is not None:
        settings["metrics_port"] = int(metrics_port)
    Path(folder, "settings.json").write_text(json.dumps(settings))
    model_settings = mlserver_model_settings(name, uri, batch_size)
    Path(folder, "model-settings.json").write_text(json.dumps(model_settings))
    return [str(executable), "start", folder]


def _read_input(input_path: str | None) -> str:
    return sys.stdin.read() if input_path is None else Path(input_path).read_text()


def flavor_config(model_uri: str) -> dict[str, Any]:
    """The ``datamint`` block of a model's MLmodel file (downloads the MLmodel only)."""
    from mlflow.models import Model

    from datamint_core.flavor import require_datamint_flavor

    return require_datamint_flavor(Model.load(model_uri).flavors, model_uri)


__all__ = ["CONTENT_TYPES", "DatamintBackend", "flavor_config", "mlserver_command"]
