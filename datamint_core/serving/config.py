"""Operator settings of the scoring server: limits, timeouts, and which files it may read.

Each setting comes from, in this order: an explicit argument (the ``datamint serve`` flags),
an environment variable, then the default.

==============================  ==========================================  ===========
flag                            environment variable                        default
==============================  ==========================================  ===========
``--max-request-size``          ``DATAMINT_SERVE_MAX_REQUEST_SIZE``         512M
``--max-decoded-bytes``         ``DATAMINT_SERVE_MAX_DECODED_BYTES``        1G
``--max-slices``                ``DATAMINT_SERVE_MAX_SLICES``               4096
``--max-json-values``           ``DATAMINT_SERVE_MAX_JSON_VALUES``          1M
``--max-parts``                 ``DATAMINT_SERVE_MAX_PARTS``                4096
``--timeout``                   ``DATAMINT_SERVE_REQUEST_TIMEOUT``          60 s
``--read-timeout``              ``DATAMINT_SERVE_READ_TIMEOUT``             30 s
``--limit-concurrency``         ``DATAMINT_SERVE_LIMIT_CONCURRENCY``        1000
``--keep-alive-timeout``        ``DATAMINT_SERVE_KEEP_ALIVE_TIMEOUT``       5 s
``--graceful-timeout``          ``DATAMINT_SERVE_GRACEFUL_TIMEOUT``         30 s
``--max-header-size``           ``DATAMINT_SERVE_MAX_HEADER_SIZE``          64K
``--allow-path-dir`` (repeat)   ``DATAMINT_SERVE_ALLOW_PATH_DIRS``          none
==============================  ==========================================  ===========
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from datamint_core._env import read_env
from datamint_core._limits import (
    DEFAULT_MAX_DECODED_BYTES,
    DEFAULT_MAX_SLICES,
    MAX_DECODED_BYTES_ENV,
    MAX_SLICES_ENV,
)
from datamint_core._numbers import AMOUNT, COUNT, SECONDS, SIZE, NumberKind, parse, parse_size
from datamint_core._request_paths import ALLOW_PATH_DIRS_ENV, path_dirs_from_env, resolve_path_dirs

MAX_REQUEST_SIZE_ENV = "DATAMINT_SERVE_MAX_REQUEST_SIZE"
REQUEST_TIMEOUT_ENV = "DATAMINT_SERVE_REQUEST_TIMEOUT"
#: The model a worker process loads when ``datamint serve`` runs several workers.
MODEL_URI_ENV = "DATAMINT_SERVE_MODEL_URI"

DEFAULT_MAX_REQUEST_SIZE = 512 * 1024**2
#: Values a JSON body may hold (pixel lists included). Parsing JSON holds the interpreter
#: (no thread runs meanwhile, the event loop's health checks included) for about 0.2 s per
#: million values; larger arrays travel as npy_base64 or multipart parts, which cost almost
#: nothing to parse.
DEFAULT_MAX_JSON_VALUES = 1024**2
DEFAULT_REQUEST_TIMEOUT = 60.0

#: field -> (environment variable, kind of number)
_SETTINGS: dict[str, tuple[str, NumberKind]] = {
    "max_request_size": (MAX_REQUEST_SIZE_ENV, SIZE),
    "request_timeout": (REQUEST_TIMEOUT_ENV, SECONDS),
    "max_decoded_bytes": (MAX_DECODED_BYTES_ENV, SIZE),
    "max_slices": (MAX_SLICES_ENV, COUNT),
    "max_json_values": ("DATAMINT_SERVE_MAX_JSON_VALUES", AMOUNT),
    "read_timeout": ("DATAMINT_SERVE_READ_TIMEOUT", SECONDS),
    "limit_concurrency": ("DATAMINT_SERVE_LIMIT_CONCURRENCY", COUNT),
    "keep_alive_timeout": ("DATAMINT_SERVE_KEEP_ALIVE_TIMEOUT", SECONDS),
    "graceful_timeout": ("DATAMINT_SERVE_GRACEFUL_TIMEOUT", SECONDS),
    "max_header_size": ("DATAMINT_SERVE_MAX_HEADER_SIZE", SIZE),
    "max_parts": ("DATAMINT_SERVE_MAX_PARTS", COUNT),
}


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Limits and permissions of one scoring server.

    Args:
        max_request_size: largest accepted request body, in bytes; larger ones get a 413.
        request_timeout: seconds a request may take (parsing and prediction) before a 504.
        allow_path_dirs: directories whose files a resource's ``path`` may name; with none,
            a request naming a path gets a 403.
        max_decoded_bytes: pixel bytes one request may decode (all its arrays), checked from
            the declared shapes before allocating; more gets a 413.
        max_slices: slices or frames one request may run through the volume/frame bridges.
        max_json_values: values (numbers, strings, ...) a JSON body may hold; more gets a
            413 pointing to npy_base64 and multipart, before the body is parsed.
        read_timeout: seconds a client has to send a whole request (headers and body);
            a slower one gets a 408 and its connection is closed.
        limit_concurrency: connections (open ones included) and requests at once; more get a
            503 from uvicorn.
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        graceful_timeout: seconds SIGTERM waits for requests in flight before closing them.
        max_header_size: largest request head (request line and headers), in bytes.
        max_parts: multipart parts one request may carry (files and fields each); a DICOM
            series sent file by file needs one per slice. More get a 413.
    """

    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    allow_path_dirs: tuple[str, ...] = ()
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_slices: int = DEFAULT_MAX_SLICES
    max_json_values: int = DEFAULT_MAX_JSON_VALUES
    read_timeout: float = 30.0
    limit_concurrency: int = 1000
    keep_alive_timeout: float = 5.0
    graceful_timeout: float = 30.0
    max_header_size: int = 64 * 1024
    max_parts: int = 4096

    def __post_init__(self) -> None:
        for name, (_, kind) in _SETTINGS.items():
            value = getattr(self, name)
            if parse(kind, value, name) != value:  # a field holds the number, not its text
                raise ValueError(f"{name}={value!r} is not valid; accepted: {kind.accepted}.")
        object.__setattr__(self, "allow_path_dirs", resolve_path_dirs(self.allow_path_dirs))

    @classmethod
    def resolve(
        cls, allow_path_dirs: Sequence[str] | None = None, **settings: Any
    ) -> ServerConfig:
        """Build a config from explicit values, falling back to the environment, then defaults.

        Args:
            allow_path_dirs: see the class; ``None`` reads ``DATAMINT_SERVE_ALLOW_PATH_DIRS``.
            **settings: any other field of the class; ``None`` (or left out) reads its
                environment variable.

        Raises:
            ValueError: a value (given or read from the environment) is not valid; the
                message names the setting or variable and what is accepted.
        """
        unknown = sorted(set(settings) - set(_SETTINGS))
        if unknown:
            raise TypeError(f"Unknown server setting(s) {unknown}; known: {sorted(_SETTINGS)}.")
        values: dict[str, Any] = {}
        for name, (env, kind) in _SETTINGS.items():
            given = settings.get(name)
            raw = given if given is not None else read_env(env)
            if raw is not None:
                values[name] = parse(kind, raw, name if given is not None else env)
        if allow_path_dirs is None:
            allow_path_dirs = path_dirs_from_env()
        return cls(allow_path_dirs=tuple(allow_path_dirs), **values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild this config in a worker process."""
        env = {env: str(getattr(self, name)) for name, (env, _) in _SETTINGS.items()}
        env[ALLOW_PATH_DIRS_ENV] = os.pathsep.join(self.allow_path_dirs)
        return env


__all__ = ["MODEL_URI_ENV", "ServerConfig", "parse_size"]
