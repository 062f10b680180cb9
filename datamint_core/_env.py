"""Environment variables, read when used, through one typed helper.

An explicit argument always beats the environment: callers pass their argument first and
fall back to :func:`read_env` only when it is ``None``.
"""

from __future__ import annotations

import os
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
