"""Which local files a request may name.

A resource may carry a local ``path`` instead of its pixels. In a user's own process that is
their own file; in a request it comes from a client, so every server (``datamint serve``,
the pyfunc under ``mlflow models serve``) reads it only inside the directories the operator
allowed (``--allow-path-dir``, ``DATAMINT_SERVE_ALLOW_PATH_DIRS``): by default none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from datamint_core._env import DATAMINT_SERVE_ALLOW_PATH_DIRS
from datamint_core.errors import MalformedRequestError, PathNotAllowedError, ResourceError
from datamint_core.wire import check_path_field


def path_dirs_from_env() -> tuple[str, ...]:
    """The directories ``DATAMINT_SERVE_ALLOW_PATH_DIRS`` names (``os.pathsep``-separated),
    as given."""
    return DATAMINT_SERVE_ALLOW_PATH_DIRS.get() or ()


def resolve_path_dirs(directories: Sequence[str]) -> tuple[str, ...]:
    """The directories, resolved (symbolic links followed), each checked to exist.

    Raises:
        ValueError: a directory that does not exist, named.
    """
    for directory in directories:
        if not os.path.isdir(directory):
            raise ValueError(
                f"allow_path_dirs names {directory!r}, which is not an existing directory."
            )
    return tuple(os.path.realpath(directory) for directory in directories)


def check_request_paths(records: Sequence[Any], allow_path_dirs: Sequence[str] | None) -> None:
    """Refuse resources that name a local file outside the allowed directories.

    Args:
        records: resource JSON forms; entries that are not objects are left to the decoder.
        allow_path_dirs: resolved directories (:func:`resolve_path_dirs`) whose files may be
            read; ``None`` allows any path (the command line reading the caller's own files).

    Raises:
        MalformedRequestError: a ``path`` that is not a string or holds a NUL byte.
        PathNotAllowedError: a path outside the allowed directories, named with what the
            operator must allow.
    """
    for position, record in enumerate(records):
        path = record.get("path") if isinstance(record, Mapping) else None
        if path is None:
            continue
        try:
            check_path_field(path)
        except ResourceError as error:
            raise MalformedRequestError(f"Input #{position}: {error}") from None
        if allow_path_dirs is None:
            continue
        resolved = os.path.realpath(path)
        if not any(os.path.commonpath([resolved, d]) == d for d in allow_path_dirs):
            where = (
                f"the allowed directories {list(allow_path_dirs)}"
                if allow_path_dirs
                else "any directory: this server reads no local files"
            )
            raise PathNotAllowedError(
                f"Input #{position} names the local path {path!r}, which is outside {where}. "
                "Send the pixels inline (npy_base64) or as a multipart part, or start the "
                "server with --allow-path-dir DIR."
            )
