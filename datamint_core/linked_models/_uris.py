"""Linked model references as written: validating ``{key: uri}`` and parsing each URI.

Pure string work, no server asked. The key is the name the parent model uses
(``get_mlflow_models()[key]``); the URI is one of :data:`ACCEPTED`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

#: The key under which the top-level model goes through pinning and the cache.
TOP_LEVEL_KEY = "<model>"

ACCEPTED = (
    "models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/latest, "
    "runs:/<run_id>/<path>, or a local model directory"
)
REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))$")
RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z_-]+)/(?P<path>.+)$")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def check_linked_uris(uris: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a ``{key: uri}`` mapping given to a model.

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE`` for a non-string key or a malformed URI.
    """
    if uris is None:
        return {}
    if not isinstance(uris, Mapping):
        raise MlflowException(
            f"mlflow_models_uri must be a dict of name -> model URI, got {type(uris).__name__}.",
            INVALID_PARAMETER_VALUE,
        )
    for key, uri in uris.items():
        check_key(key)
        parse_uri(key, uri)
    return dict(uris)


def check_key(key: Any) -> None:
    """Raise ``INVALID_PARAMETER_VALUE`` unless ``key`` can name a directory in a bundle."""
    if not isinstance(key, str) or not key or "/" in key or "\\" in key or key.startswith("."):
        raise MlflowException(
            f"Linked model name {key!r} is not valid: use a non-empty string without '/' or "
            "'\\' that does not start with '.'.",
            INVALID_PARAMETER_VALUE,
        )


def parse_uri(key: str, uri: Any) -> dict[str, Any]:
    """Split ``uri`` into its kind and parts.

    Returns:
        ``{"kind": "registry", "name", "version", "alias"}`` (one of version and alias is
        ``None``), ``{"kind": "run", "run_id", "path"}`` or ``{"kind": "local", "path"}``
        (absolute, ``~`` expanded).

    Raises:
        MlflowException: ``INVALID_PARAMETER_VALUE``, naming the URI and :data:`ACCEPTED`.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise _invalid(f"{subject(key)}: URI {uri!r} is not valid; accepted: {ACCEPTED}.")
    if uri.startswith("models:"):
        match = REGISTRY_URI.match(uri)
        if match is None:
            raise _invalid(
                f"{subject(key)}: {uri!r} is not a valid model URI; accepted: {ACCEPTED}."
            )
        version = match["version"]
        if version is not None and not (version.isdigit() or version == "latest"):
            raise _invalid(
                f"{subject(key)}: {uri!r} names version {version!r}; use a number, "
                "'latest' or an alias (models:/<name>@<alias>). Stages are not supported."
            )
        return {"kind": "registry", **match.groupdict()}
    if uri.startswith("runs:"):
        match = RUNS_URI.match(uri)
        if match is None:
            raise _invalid(
                f"{subject(key)}: {uri!r} is not a valid runs URI; accepted: {ACCEPTED}."
            )
        return {"kind": "run", **match.groupdict()}
    if _SCHEME.match(uri) and not uri.startswith("file://"):
        raise _invalid(
            f"{subject(key)}: URI scheme of {uri!r} is not supported; accepted: {ACCEPTED}."
        )
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return {"kind": "local", "path": os.path.abspath(os.path.expanduser(path))}


def is_pinnable(model_uri: str) -> bool:
    """Whether ``model_uri`` is one a top-level model is pinned and cached by: a
    ``models:/<name>/...`` or ``runs:/`` URI, or a ``file:`` one (MLflow 3's logged-model
    URIs, ``models:/m-<id>``, and other schemes are not)."""
    return (
        REGISTRY_URI.match(model_uri) is not None
        or RUNS_URI.match(model_uri) is not None
        or model_uri.startswith("file:")
    )


def subject(key: str) -> str:
    """How errors name a model: the top-level one, or a linked one by its key."""
    return "Model" if key == TOP_LEVEL_KEY else f"Linked model {key!r}"


def subject_lower(key: str) -> str:
    """:func:`subject` inside a sentence."""
    return "the model" if key == TOP_LEVEL_KEY else f"linked model {key!r}"


def _invalid(message: str) -> MlflowException:
    return MlflowException(message, INVALID_PARAMETER_VALUE)
