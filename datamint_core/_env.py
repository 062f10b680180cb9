"""Every environment variable the library reads, each defined once (MLflow's
``environment_variables.py`` way): its name, what it holds, its default and what it does.

A variable is read when used, through :meth:`EnvironmentVariable.get`, which returns a typed
value (or the default when the variable is unset or blank) and refuses a bad value naming the
variable and what it accepts. An explicit argument always beats the environment: callers pass
their argument first and fall back to ``get()`` only when it is ``None``.

``EnvVars`` (public), the ``datamint serve`` flags' help and the README's table of variables
all come from :data:`REGISTRY`; a test checks that every ``DATAMINT_*`` name in the product
code is one of its entries.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from datamint_core._numbers import AMOUNT, COUNT, SECONDS, SIZE, ValueKind, parse

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ValueError


#: Any text (a URL, a path, an id).
TEXT = ValueKind(str, "any text")
#: A yes/no word.
FLAG = ValueKind(_flag, f"one of {', '.join(_TRUE + _FALSE)}")
#: Directories separated by ``os.pathsep``.
PATHS = ValueKind(
    lambda text: tuple(part for part in text.split(os.pathsep) if part),
    f"directories separated by {os.pathsep!r}",
)

#: Every variable, by name, in the order defined.
REGISTRY: dict[str, EnvironmentVariable] = {}


class EnvironmentVariable(str):
    """One environment variable. It *is* its name (a ``str``), so it can be used wherever
    the name is (``os.environ[DATAMINT_OFFLINE]``, an f-string).

    Args:
        name: the variable.
        kind: what it holds (:data:`TEXT`, :data:`FLAG`, :data:`PATHS` or a number kind of
            :mod:`datamint_core._numbers`).
        default: the value when unset, written as a user would set it (``"512M"``);
            ``None``: no value.
        doc: what it does, in a few words (the CLI's help and the README reuse it).
        shown_default: the default as a reader should see it, where it is not one value
            (``"$XDG_CACHE_HOME/datamint"``).
    """

    kind: ValueKind
    default_text: str | None
    doc: str
    shown_default: str

    def __new__(
        cls,
        name: str,
        kind: ValueKind,
        default: str | None,
        doc: str,
        shown_default: str | None = None,
    ) -> EnvironmentVariable:
        if name in REGISTRY:
            raise ValueError(f"{name} is defined twice")
        variable = super().__new__(cls, name)
        variable.kind = kind
        variable.default_text = default
        variable.doc = doc
        variable.shown_default = shown_default or default or "unset"
        REGISTRY[name] = variable
        return variable

    @property
    def name(self) -> str:
        return str(self)

    @property
    def default(self) -> Any:
        """The typed default (``None`` when there is none)."""
        return None if self.default_text is None else self.kind.read(self.default_text)

    def get_raw(self) -> str | None:
        """The stripped value, or ``None`` when unset or blank."""
        return os.environ.get(self, "").strip() or None

    def get(self) -> Any:
        """The typed value, or :attr:`default` when unset or blank.

        Raises:
            ValueError: ``NAME='value' is not valid; accepted: ...``.
        """
        raw = self.get_raw()
        return self.default if raw is None else parse(self.kind, raw, self.name)

    def help(self) -> str:
        """``doc (env NAME; default D)``: the help of the command-line flag it backs."""
        return f"{self.doc} (env {self.name}; default {self.shown_default})"

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as its plain name
        return (str, (str(self),))


# --- the Datamint platform ---------------------------------------------------------------

DATAMINT_API_KEY = EnvironmentVariable(
    "DATAMINT_API_KEY", TEXT, None,
    "the platform API key; sent only to the platform's own origins",
    "the config file's api_key",
)
DATAMINT_API_URL = EnvironmentVariable(
    "DATAMINT_API_URL", TEXT, None, "the platform's API",
    "the config file's api_url, else https://api.datamint.io",
)
DATAMINT_MLFLOW_URL = EnvironmentVariable(
    "DATAMINT_MLFLOW_URL", TEXT, None, "the platform's MLflow tracking server",
    "the config file's mlflow_url, else the API's host on port 5000",
)
DATAMINT_PROJECT_ID = EnvironmentVariable(
    "DATAMINT_PROJECT_ID", TEXT, None, "the platform project runs are logged to",
    "the config file's project_id",
)
DATAMINT_PROJECT_NAME = EnvironmentVariable(
    "DATAMINT_PROJECT_NAME", TEXT, None, "the platform project, by name",
    "the config file's project_name",
)
DATAMINT_PROJECTS_DIR = EnvironmentVariable(
    "DATAMINT_PROJECTS_DIR", TEXT, None,
    "the directory where local training projects are found by name",
    "the config file's projects_dir",
)
DATAMINT_CONFIG_FILE = EnvironmentVariable(
    "DATAMINT_CONFIG_FILE", TEXT, None, "the user config file `datamint config` writes",
    "$XDG_CONFIG_HOME/datamint/config.json, else ~/.config/datamint/config.json",
)
DATAMINT_PLATFORM_TIMEOUT = EnvironmentVariable(
    "DATAMINT_PLATFORM_TIMEOUT", SECONDS, "10", "seconds a call to the platform may take",
)

# --- the artifact cache and linked models ---------------------------------------------------

DATAMINT_CACHE_DIR = EnvironmentVariable(
    "DATAMINT_CACHE_DIR", TEXT, None, "the artifact cache's directory",
    "$XDG_CACHE_HOME/datamint, else ~/.cache/datamint",
)
DATAMINT_OFFLINE = EnvironmentVariable(
    "DATAMINT_OFFLINE", FLAG, "false",
    "no tracking-server call: models load from the artifact cache only",
)
DATAMINT_ALWAYS_PULL_ARTIFACTS = EnvironmentVariable(
    "DATAMINT_ALWAYS_PULL_ARTIFACTS", FLAG, "false",
    "download a model's files again even when the cache holds them",
)
DATAMINT_PULL_ARTIFACTS_IN_OFFLINE_MODE = EnvironmentVariable(
    "DATAMINT_PULL_ARTIFACTS_IN_OFFLINE_MODE", FLAG, "false",
    "offline, still download a pinned version the cache lacks",
)

# --- datamint serve (the flag of each is named in datamint_core.cli) ------------------------

DATAMINT_SERVE_MAX_REQUEST_SIZE = EnvironmentVariable(
    "DATAMINT_SERVE_MAX_REQUEST_SIZE", SIZE, "512M", "largest request body, e.g. 512M",
)
DATAMINT_SERVE_MAX_DECODED_BYTES = EnvironmentVariable(
    "DATAMINT_SERVE_MAX_DECODED_BYTES", SIZE, "1G",
    "pixel bytes one request may decode, checked before allocating, e.g. 1G",
)
DATAMINT_SERVE_MAX_SLICES = EnvironmentVariable(
    "DATAMINT_SERVE_MAX_SLICES", COUNT, "4096", "slices or frames one request may run",
)
DATAMINT_SERVE_MAX_JSON_VALUES = EnvironmentVariable(
    "DATAMINT_SERVE_MAX_JSON_VALUES", AMOUNT, "1M",
    "values a JSON body may hold, else 413 (send arrays as npy_base64 or multipart), e.g. 1M",
)
DATAMINT_SERVE_MAX_PARTS = EnvironmentVariable(
    "DATAMINT_SERVE_MAX_PARTS", COUNT, "4096",
    "multipart parts one request may carry, e.g. one per slice of a DICOM series",
)
DATAMINT_SERVE_REQUEST_TIMEOUT = EnvironmentVariable(
    "DATAMINT_SERVE_REQUEST_TIMEOUT", SECONDS, "60", "seconds a request may take, else 504",
)
DATAMINT_SERVE_READ_TIMEOUT = EnvironmentVariable(
    "DATAMINT_SERVE_READ_TIMEOUT", SECONDS, "30",
    "seconds a client has to send a whole request, else 408",
)
DATAMINT_SERVE_LIMIT_CONCURRENCY = EnvironmentVariable(
    "DATAMINT_SERVE_LIMIT_CONCURRENCY", COUNT, "1000",
    "connections and requests at once; more are refused",
)
DATAMINT_SERVE_KEEP_ALIVE_TIMEOUT = EnvironmentVariable(
    "DATAMINT_SERVE_KEEP_ALIVE_TIMEOUT", SECONDS, "5",
    "seconds an idle keep-alive connection stays open",
)
DATAMINT_SERVE_GRACEFUL_TIMEOUT = EnvironmentVariable(
    "DATAMINT_SERVE_GRACEFUL_TIMEOUT", SECONDS, "30",
    "seconds SIGTERM waits for requests in flight",
)
DATAMINT_SERVE_MAX_HEADER_SIZE = EnvironmentVariable(
    "DATAMINT_SERVE_MAX_HEADER_SIZE", SIZE, "64K", "largest request head, e.g. 64K",
)
DATAMINT_SERVE_ALLOW_PATH_DIRS = EnvironmentVariable(
    "DATAMINT_SERVE_ALLOW_PATH_DIRS", PATHS, None,
    "let requests name local files under these directories (the flag repeats)",
    "none: the server reads no local files",
)
DATAMINT_SERVE_MODEL_URI = EnvironmentVariable(
    "DATAMINT_SERVE_MODEL_URI", TEXT, None,
    "set by `datamint serve` for its worker processes: the model they load",
)

# --- datamint batch -------------------------------------------------------------------------

DATAMINT_BATCH_THREADS_PER_WORKER = EnvironmentVariable(
    "DATAMINT_BATCH_THREADS_PER_WORKER", COUNT, None, "compute threads of each local worker",
    "the CPU cores shared out among the workers",
)

# --- other libraries' variables the library reads -------------------------------------------

MLFLOW_DEFAULT_PREDICTION_DEVICE = EnvironmentVariable(
    "MLFLOW_DEFAULT_PREDICTION_DEVICE", TEXT, None,
    "MLflow's: the inference device when the model config names none",
    "hardware detection (CUDA, then MPS, then CPU)",
)
MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR = EnvironmentVariable(
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", FLAG, None,
    "MLflow's download progress bar", "on where stderr is a terminal",
)
XDG_CACHE_HOME = EnvironmentVariable("XDG_CACHE_HOME", TEXT, None, "user cache base", "~/.cache")
XDG_CONFIG_HOME = EnvironmentVariable(
    "XDG_CONFIG_HOME", TEXT, None, "user config base", "~/.config"
)


def datamint_variables() -> list[EnvironmentVariable]:
    """The library's own variables (``DATAMINT_*``), in the order defined."""
    return [variable for name, variable in REGISTRY.items() if name.startswith("DATAMINT_")]


@contextlib.contextmanager
def mlflow_progress_bar_only_on_a_terminal() -> Iterator[None]:
    """Silence MLflow's artifact progress bar while stderr is not a terminal.

    MLflow draws it whenever tqdm is importable; in a log file or CI output it is noise.
    The user's own ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` always wins.
    """
    variable = MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name
    if variable in os.environ or sys.stderr.isatty():
        yield
        return
    os.environ[variable] = "false"
    try:
        yield
    finally:
        os.environ.pop(variable, None)
