"""Datamint platform settings: environment variables, the user config file, and URL rules.

Where a setting comes from, first match wins::

    1. the environment           DATAMINT_API_KEY, DATAMINT_API_URL, DATAMINT_MLFLOW_URL,
                                 DATAMINT_PROJECT_ID, DATAMINT_PROJECT_NAME,
                                 DATAMINT_PROJECTS_DIR (local training projects)
    2. the user config file      written by ``datamint config`` (JSON, mode 0600):
                                 $DATAMINT_CONFIG_FILE, else $XDG_CONFIG_HOME/datamint/config.json,
                                 else ~/.config/datamint/config.json
    3. the default               api_url https://api.datamint.io; mlflow_url: the API's host on
                                 port 5000, as the public Datamint SDK derives it

The API key is a secret: it is sent only to the platform's own origins (the API URL and the
MLflow URL), never over plain HTTP to a host other than this machine, and :func:`masked`
is the only way it is ever shown.

Reading the settings reads one small file and makes no network call.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from datamint_core import _env
from datamint_core._files import write_atomically
from datamint_core.errors import PlatformConfigError

DEFAULT_API_URL = "https://api.datamint.io"
#: The port of the platform's MLflow tracking server when only the API URL is configured.
DEFAULT_MLFLOW_PORT = 5000
#: The URI scheme of the platform's tracking server, registered with MLflow's plugin entry points.
SCHEME = "datamint"
#: The name of the request auth (``MLFLOW_TRACKING_AUTH``) that adds the key for the platform.
AUTH_NAME = "datamint"


#: Every ``DATAMINT_*`` environment variable the library reads, each member's value its name
#: (``EnvVars.DATAMINT_OFFLINE.value == "DATAMINT_OFFLINE"``). Built from the one registry,
#: ``datamint_core._env``, which also holds each variable's type, default and meaning.
EnvVars = enum.Enum(  # type: ignore[misc]
    "EnvVars",
    [(variable.name, variable.name) for variable in _env.datamint_variables()],
    type=str,
    module=__name__,
)
EnvVars.__doc__ = "The ``DATAMINT_*`` environment variables the library reads."

#: Config-file keys and the environment variable that overrides each.
FILE_KEYS: dict[str, _env.EnvironmentVariable] = {
    "api_key": _env.DATAMINT_API_KEY,
    "api_url": _env.DATAMINT_API_URL,
    "mlflow_url": _env.DATAMINT_MLFLOW_URL,
    "project_id": _env.DATAMINT_PROJECT_ID,
    "project_name": _env.DATAMINT_PROJECT_NAME,
    "projects_dir": _env.DATAMINT_PROJECTS_DIR,
}


def config_path() -> Path:
    """Return the path of the user config file (it may not exist)."""
    explicit = _env.DATAMINT_CONFIG_FILE.get()
    if explicit:
        return Path(explicit).expanduser()
    base = _env.XDG_CONFIG_HOME.get() or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "datamint" / "config.json"


def read_config_file(path: Path | None = None) -> dict[str, str]:
    """Return the config file's settings (``{}`` when there is no file).

    Raises:
        PlatformConfigError: the file is not a JSON object of strings.
    """
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlatformConfigError(
            f"The Datamint config file {path} is not valid JSON ({error.msg}); fix it or "
            "rewrite it with `datamint config`."
        ) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise PlatformConfigError(
            f"The Datamint config file {path} must hold a JSON object of strings with the keys "
            f"{sorted(FILE_KEYS)}; rewrite it with `datamint config`."
        )
    return {key: value for key, value in data.items() if key in FILE_KEYS and value.strip()}


def write_config_file(values: dict[str, str | None], path: Path | None = None) -> Path:
    """Merge ``values`` into the config file (``None`` removes a key); write it with mode 0600.

    The file is written to a temporary name beside it and renamed into place, so a reader
    never sees half a file, and it is never readable by other users, not even for a moment.

    Raises:
        PlatformConfigError: an unknown key, or an unsafe URL.
    """
    unknown = sorted(set(values) - set(FILE_KEYS))
    if unknown:
        raise PlatformConfigError(f"Unknown config keys {unknown}; accepted: {sorted(FILE_KEYS)}.")
    for key in ("api_url", "mlflow_url"):
        if values.get(key):
            check_url(str(values[key]), FILE_KEYS[key].name)
    path = path or config_path()
    current = read_config_file(path)
    for key, value in values.items():
        if value is None or not value.strip():
            current.pop(key, None)
        else:
            current[key] = value.strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomically(path, json.dumps(current, indent=2, sort_keys=True) + "\n", mode=0o600)
    return path


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_url(url: str, setting: str) -> str:
    """Return ``url`` without a trailing slash if the API key may be sent to it.

    Raises:
        PlatformConfigError: not an http(s) URL with a host, or plain ``http`` to a host other
            than this machine (the key would travel in clear text).
    """
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PlatformConfigError(
            f"{setting}={url!r} is not a URL the Datamint platform can be reached at; give "
            "https://host[:port][/path]."
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise PlatformConfigError(
            f"{setting}={url!r} uses plain HTTP to {parts.hostname}, which would send the API "
            "key in clear text; use https:// (plain http is accepted only for localhost, "
            "127.0.0.1 and ::1)."
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise PlatformConfigError(
            f"{setting} must be a plain base URL (no user:password@, query or fragment); "
            "put the API key in DATAMINT_API_KEY."
        )
    return url.strip().rstrip("/")


def origin(url: str) -> tuple[str, str, int]:
    """Return ``(scheme, host, port)`` of ``url``, the port filled in from the scheme."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def masked(secret: str | None) -> str:
    """Show a secret as ``abcd…(32 chars)`` at most: never more than its first 4 characters."""
    if not secret:
        return "(not set)"
    shown = secret[:4] if len(secret) >= 16 else ""
    return f"{shown}…({len(secret)} chars)"


@dataclasses.dataclass(frozen=True)
class PlatformSettings:
    """The resolved Datamint settings and where each came from.

    Attributes:
        api_key: the API key (``None`` when not configured); never shown by ``repr``.
        api_url: the platform's API base URL.
        mlflow_url: the platform's MLflow tracking server URL.
        project_id, project_name: the project given in the settings, if any.
        projects_dir: the directory holding local training projects (MSD / nnU-Net
            layout), found by name by ``ImageDataset(project=...)``.
        sources: ``{field: "env" | "file" | "default"}``.
        timeout_s: seconds to wait for the platform before calling it unreachable.
    """

    api_url: str
    mlflow_url: str
    api_key: str | None = None
    project_id: str | None = None
    project_name: str | None = None
    projects_dir: str | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout_s: float = _env.DATAMINT_PLATFORM_TIMEOUT.default

    def __repr__(self) -> str:
        return (
            f"PlatformSettings(api_url={self.api_url!r}, mlflow_url={self.mlflow_url!r}, "
            f"api_key={masked(self.api_key)}, project_id={self.project_id!r}, "
            f"project_name={self.project_name!r}, projects_dir={self.projects_dir!r})"
        )

    @property
    def configured(self) -> bool:
        """Whether an API key is set (in the environment or the config file)."""
        return bool(self.api_key)

    @property
    def tracking_uri(self) -> str:
        """The ``datamint://host[:port][/path]`` tracking URI of the platform's MLflow server."""
        parts = urlsplit(self.mlflow_url)
        return f"{SCHEME}://{parts.netloc}{parts.path}"

    def key_origins(self) -> set[tuple[str, str, int]]:
        """The origins the API key may be sent to: the API's and the MLflow server's."""
        return {origin(self.api_url), origin(self.mlflow_url)}

    def check(self) -> PlatformSettings:
        """Return ``self`` when an API key is set and both URLs are safe to send it to.

        Raises:
            PlatformConfigError: naming the missing or unsafe setting.
        """
        if not self.api_key:
            raise PlatformConfigError(
                "The Datamint platform is not configured: DATAMINT_API_KEY is not set. Run "
                "`datamint config --api-key -` (the key is read from stdin) or set "
                "DATAMINT_API_KEY (and DATAMINT_API_URL for a platform other than "
                f"{DEFAULT_API_URL})."
            )
        check_url(self.api_url, _setting_name("api_url", self.sources))
        check_url(self.mlflow_url, _setting_name("mlflow_url", self.sources))
        return self

    def http_url_for(self, uri: str) -> str:
        """Map a ``datamint://host[:port][/path]`` URI to the MLflow server's http(s) URL.

        Raises:
            PlatformConfigError: the URI names a host other than the configured platform's
                (the API key is never sent there), or the settings are incomplete or unsafe.
        """
        self.check()
        parts = urlsplit(uri)
        configured = urlsplit(self.mlflow_url)
        if parts.netloc and parts.netloc.lower() != configured.netloc.lower():
            raise PlatformConfigError(
                f"{uri!r} is not the configured Datamint platform ({self.tracking_uri}, from "
                f"{_setting_name('mlflow_url', self.sources)}); the API key is sent only there. "
                "Use that URI, or set DATAMINT_MLFLOW_URL to the server you mean."
            )
        return self.mlflow_url


def _setting_name(field: str, sources: dict[str, str]) -> str:
    variable = FILE_KEYS[field].name
    if sources.get(field) == "file":
        return f"{field} in {config_path()}"
    if sources.get(field) == "default" and field == "mlflow_url":
        return f"{variable} (derived from DATAMINT_API_URL)"
    return variable


def load_settings() -> PlatformSettings:
    """Resolve the settings: the environment, then the config file, then the defaults.

    Raises:
        PlatformConfigError: the config file is unreadable, or a timeout is not a number.
    """
    file_values = read_config_file()
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field, variable in FILE_KEYS.items():
        from_env = variable.get()
        if from_env:
            values[field], sources[field] = from_env, "env"
        elif file_values.get(field):
            values[field], sources[field] = file_values[field], "file"
    if "api_url" not in values:
        values["api_url"], sources["api_url"] = DEFAULT_API_URL, "default"
    values["api_url"] = values["api_url"].strip().rstrip("/")
    if "mlflow_url" not in values:
        api = urlsplit(values["api_url"])
        host = f"[{api.hostname}]" if ":" in (api.hostname or "") else api.hostname
        values["mlflow_url"] = f"{api.scheme}://{host}:{DEFAULT_MLFLOW_PORT}"
        sources["mlflow_url"] = "default"
    values["mlflow_url"] = values["mlflow_url"].strip().rstrip("/")
    try:
        timeout = float(_env.DATAMINT_PLATFORM_TIMEOUT.get())
    except ValueError as error:
        raise PlatformConfigError(str(error)) from None
    return PlatformSettings(sources=sources, timeout_s=timeout, **values)
