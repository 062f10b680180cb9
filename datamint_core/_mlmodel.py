"""Reading a model directory's MLmodel file: one reader for the whole package.

MLflow parses MLmodel with the pure-Python YAML parser several times per load; our own reads
use libyaml when it is there and never add a second parse of the same file per purpose.
"""

from __future__ import annotations

import os
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST


def read_mlmodel(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed MLmodel of a local model directory.

    Raises:
        MlflowException: the directory has no MLmodel file.
    """
    import yaml

    path = os.path.join(os.fspath(model_dir), "MLmodel")
    if not os.path.isfile(path):
        raise MlflowException(
            f"{os.fspath(model_dir)!r} is not an MLflow model directory: it has no MLmodel file.",
            RESOURCE_DOES_NOT_EXIST,
        )
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(path, encoding="utf-8") as file:
        return yaml.load(file, Loader=loader) or {}


def read_flavors(model_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{flavor name: its configuration}`` of a local model directory."""
    flavors = read_mlmodel(model_dir).get("flavors") or {}
    return {name: conf or {} for name, conf in flavors.items()}


def write_mlmodel(model: Any, model_dir: str | os.PathLike[str]) -> None:
    """Write ``model`` (an ``mlflow.models.Model``) as the MLmodel file of ``model_dir``.

    The same YAML as ``Model.save`` (``safe_dump``, block style), written with libyaml's
    emitter when it is there: MLflow's pure-Python emitter is a large part of a save.
    """
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with open(os.path.join(os.fspath(model_dir), "MLmodel"), "w", encoding="utf-8") as file:
        yaml.dump(model.to_dict(), file, Dumper=dumper, default_flow_style=False)
