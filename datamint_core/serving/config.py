"""Operator settings of the scoring server: limits, timeouts, and which files it may read.

Each setting comes from, in this order: an explicit argument (the ``datamint serve`` flags),
an environment variable, then the default.

- largest request body: ``--max-request-size``, ``DATAMINT_SERVE_MAX_REQUEST_SIZE``, 512M;
- per-request timeout in seconds: ``--timeout``, ``DATAMINT_SERVE_REQUEST_TIMEOUT``, 60;
- directories a resource ``path`` may name: ``--allow-path-dir`` (repeatable),
  ``DATAMINT_SERVE_ALLOW_PATH_DIRS`` (``os.pathsep``-separated), none.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from datamint_core._env import read_env

MAX_REQUEST_SIZE_ENV = "DATAMINT_SERVE_MAX_REQUEST_SIZE"
REQUEST_TIMEOUT_ENV = "DATAMINT_SERVE_REQUEST_TIMEOUT"
ALLOW_PATH_DIRS_ENV = "DATAMINT_SERVE_ALLOW_PATH_DIRS"
#: The model a worker process loads when ``datamint serve`` runs several workers.
MODEL_URI_ENV = "DATAMINT_SERVE_MODEL_URI"

DEFAULT_MAX_REQUEST_SIZE = 512 * 1024**2
DEFAULT_REQUEST_TIMEOUT = 60.0

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Limits and permissions of one scoring server.

    Args:
        max_request_size: largest accepted request body, in bytes; larger ones get a 413.
        request_timeout: seconds a request may take (parsing and prediction) before a 504.
        allow_path_dirs: directories whose files a resource's ``path`` may name; with none,
            a request naming a path gets a 403.
    """

    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    allow_path_dirs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_request_size <= 0:
            raise ValueError(
                f"max_request_size={self.max_request_size!r} is not valid; "
                "accepted: a positive number of bytes."
            )
        if not self.request_timeout > 0:
            raise ValueError(
                f"request_timeout={self.request_timeout!r} is not valid; "
                "accepted: a positive number of seconds."
            )
        for directory in self.allow_path_dirs:
            if not os.path.isdir(directory):
                raise ValueError(
                    f"allow_path_dirs names {directory!r}, which is not an existing directory."
                )
        resolved = tuple(os.path.realpath(directory) for directory in self.allow_path_dirs)
        object.__setattr__(self, "allow_path_dirs", resolved)

    @classmethod
    def resolve(
        cls,
        max_request_size: int | str | None = None,
        request_timeout: float | None = None,
        allow_path_dirs: Sequence[str] | None = None,
    ) -> ServerConfig:
        """Build a config from explicit values, falling back to the environment, then defaults.

        Raises:
            ValueError: a value (given or read from the environment) is not valid.
        """
        if max_request_size is None:
            max_request_size = read_env(MAX_REQUEST_SIZE_ENV, str(DEFAULT_MAX_REQUEST_SIZE))
        if request_timeout is None:
            raw_timeout = read_env(REQUEST_TIMEOUT_ENV, str(DEFAULT_REQUEST_TIMEOUT))
            try:
                request_timeout = float(raw_timeout)
            except ValueError:
                raise ValueError(
                    f"{REQUEST_TIMEOUT_ENV}={raw_timeout!r} is not valid; "
                    "accepted: a positive number of seconds."
                ) from None
        if allow_path_dirs is None:
            raw_dirs = read_env(ALLOW_PATH_DIRS_ENV, "")
            allow_path_dirs = [d for d in raw_dirs.split(os.pathsep) if d]
        return cls(
            max_request_size=parse_size(max_request_size),
            request_timeout=float(request_timeout),
            allow_path_dirs=tuple(allow_path_dirs),
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild this config in a worker process."""
        return {
            MAX_REQUEST_SIZE_ENV: str(self.max_request_size),
            REQUEST_TIMEOUT_ENV: str(self.request_timeout),
            ALLOW_PATH_DIRS_ENV: os.pathsep.join(self.allow_path_dirs),
        }


def parse_size(size: int | str) -> int:
    """Read a byte count: ``1048576``, ``512K``, ``100M`` or ``1G`` (powers of 1024).

    Raises:
        ValueError: anything else.
    """
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    text = str(size).strip().upper().removesuffix("B")
    number, unit = (text[:-1], text[-1]) if text[-1:] in _SIZE_UNITS else (text, "")
    try:
        value = int(float(number) * _SIZE_UNITS[unit])
    except ValueError:
        raise ValueError(
            f"Request size {size!r} is not valid; accepted: a number of bytes, optionally "
            "with a K, M or G suffix (512M)."
        ) from None
    return value
