"""Operator settings of the scoring server: limits, timeouts, and which files it may read.

Each setting comes from, in this order: an explicit argument (the ``datamint serve`` flags),
its environment variable, then the variable's default. The variables, their kinds and
defaults are defined once, in :mod:`datamint_core._env`; ``datamint serve --help`` and the
README's "Running in production" table show them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from datamint_core import _env
from datamint_core._env import EnvironmentVariable
from datamint_core._numbers import parse, parse_size
from datamint_core._request_paths import path_dirs_from_env, resolve_path_dirs

#: ServerConfig field -> the environment variable that sets it (its kind and default).
#: Parsing JSON holds the interpreter (no thread runs meanwhile, the event loop's health
#: checks included) for about 0.2 s per million values, hence ``max_json_values``; larger
#: arrays travel as npy_base64 or multipart parts, which cost almost nothing to parse.
SETTINGS: dict[str, EnvironmentVariable] = {
    "max_request_size": _env.DATAMINT_SERVE_MAX_REQUEST_SIZE,
    "request_timeout": _env.DATAMINT_SERVE_REQUEST_TIMEOUT,
    "max_decoded_bytes": _env.DATAMINT_SERVE_MAX_DECODED_BYTES,
    "max_slices": _env.DATAMINT_SERVE_MAX_SLICES,
    "max_json_values": _env.DATAMINT_SERVE_MAX_JSON_VALUES,
    "read_timeout": _env.DATAMINT_SERVE_READ_TIMEOUT,
    "limit_concurrency": _env.DATAMINT_SERVE_LIMIT_CONCURRENCY,
    "keep_alive_timeout": _env.DATAMINT_SERVE_KEEP_ALIVE_TIMEOUT,
    "graceful_timeout": _env.DATAMINT_SERVE_GRACEFUL_TIMEOUT,
    "max_header_size": _env.DATAMINT_SERVE_MAX_HEADER_SIZE,
    "max_parts": _env.DATAMINT_SERVE_MAX_PARTS,
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

    max_request_size: int = SETTINGS["max_request_size"].default
    request_timeout: float = SETTINGS["request_timeout"].default
    allow_path_dirs: tuple[str, ...] = ()
    max_decoded_bytes: int = SETTINGS["max_decoded_bytes"].default
    max_slices: int = SETTINGS["max_slices"].default
    max_json_values: int = SETTINGS["max_json_values"].default
    read_timeout: float = SETTINGS["read_timeout"].default
    limit_concurrency: int = SETTINGS["limit_concurrency"].default
    keep_alive_timeout: float = SETTINGS["keep_alive_timeout"].default
    graceful_timeout: float = SETTINGS["graceful_timeout"].default
    max_header_size: int = SETTINGS["max_header_size"].default
    max_parts: int = SETTINGS["max_parts"].default

    def __post_init__(self) -> None:
        for name, variable in SETTINGS.items():
            value = getattr(self, name)
            if parse(variable.kind, value, name) != value:  # the number, not its text
                raise ValueError(
                    f"{name}={value!r} is not valid; accepted: {variable.kind.accepted}."
                )
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
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise TypeError(f"Unknown server setting(s) {unknown}; known: {sorted(SETTINGS)}.")
        values: dict[str, Any] = {}
        for name, variable in SETTINGS.items():
            given = settings.get(name)
            values[name] = (
                variable.get() if given is None else parse(variable.kind, given, name)
            )
        if allow_path_dirs is None:
            allow_path_dirs = path_dirs_from_env()
        return cls(allow_path_dirs=tuple(allow_path_dirs), **values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild this config in a worker process."""
        env = {str(variable): str(getattr(self, name)) for name, variable in SETTINGS.items()}
        env[str(_env.DATAMINT_SERVE_ALLOW_PATH_DIRS)] = os.pathsep.join(self.allow_path_dirs)
        return env


__all__ = ["SETTINGS", "ServerConfig", "parse_size"]
