"""Which device inference runs on, as torch sees this machine."""

from __future__ import annotations

import logging
import warnings

import torch

_logger = logging.getLogger(__name__)
_warned: set[str] = set()


def detect_device() -> str:
    """The best device here: ``cuda`` when CUDA works, then ``mps``, then ``cpu``."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(requested: str) -> str:
    """Return ``requested`` if this machine has it, else ``cpu`` with one warning.

    Raises:
        ValueError: ``requested`` is not a device name torch knows.
    """
    try:
        device = torch.device(requested)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"Unknown inference device {requested!r}; use e.g. 'cpu', 'cuda', 'cuda:1' or 'mps'."
        ) from None
    available = {
        "cuda": torch.cuda.is_available()
        and (device.index is None or device.index < torch.cuda.device_count()),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
    }.get(device.type, True)
    if available:
        return requested
    if requested not in _warned:
        _warned.add(requested)
        warnings.warn(
            f"Inference device {requested!r} was asked for but is not available on this "
            "machine; running on the CPU instead.",
            UserWarning,
            stacklevel=3,
        )
    return "cpu"
