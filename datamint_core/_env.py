"""Environment variables, read when used, through one typed helper.

An explicit argument always beats the environment: callers pass their argument first and
fall back to :func:`read_env` only when it is ``None``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import overload

#: Device used for inference when the model config names none (MLflow's own variable).
DEFAULT_PREDICTION_DEVICE = "MLFLOW_DEFAULT_PREDICTION_DEVICE"

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@overload
def read_env(name: str) -> str | None: ...
@overload
def read_env(name: str, default: str) -> str: ...
def read_env(name: str, default: str | None = None) -> str | None:
    """Return the stripped value of ``name``, or ``default`` when unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or default


def read_env_flag(name: str, default: bool = False) -> bool:
    """Return ``name`` read as a boolean.

    Raises:
        ValueError: the variable holds something other than a yes/no word.
    """
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"Environment variable {name}={raw!r} is not a boolean; "
        f"use one of {sorted(_TRUE | (_FALSE - {''}))}."
    )


@contextlib.contextmanager
def mlflow_progress_bar_only_on_a_terminal() -> Iterator[None]:
    """Silence MLflow's artifact progress bar while stderr is not a terminal.

    MLflow draws it whenever tqdm is importable; in a log file or CI output it is noise.
    The user's own ``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`` always wins.
    """
    variable = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if variable in os.environ or sys.stderr.isatty():
        yield
        return
    os.environ[variable] = "false"
    try:
        yield
    finally:
        os.environ.pop(variable, None)
