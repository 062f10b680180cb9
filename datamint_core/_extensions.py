"""Hooks the optional extras fill in; the core never imports them.

``datamint_torch`` registers its hardware detection here when it is imported, so a model
class that needs torch brings its own device detection with it, and a numpy-only model never
pays for importing torch. It also registers how many threads its operations may use, which
a batch worker sets so that the workers share the machine's cores. The platform layer
registers how predictions are logged to the Datamint platform, and the package registers the
file readers of :mod:`datamint_core.io` that a resource built from a file path reads with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

_device_detector: Callable[[], str] | None = None


def register_device_detector(detector: Callable[[], str]) -> None:
    """Install the function that names the best device on this machine (``cuda:0``, ``cpu``)."""
    global _device_detector
    _device_detector = detector


def detect_device() -> str:
    """Return the best device the installed extras can see; ``cpu`` without any."""
    return _device_detector() if _device_detector is not None else "cpu"


_thread_limiters: list[Callable[[int], None]] = []


def register_thread_limiter(limiter: Callable[[int], None]) -> None:
    """Install a function that caps the threads an extra's library computes with."""
    if limiter not in _thread_limiters:
        _thread_limiters.append(limiter)


def limit_threads(threads: int) -> None:
    """Cap the compute threads of every library an installed extra registered."""
    for limiter in _thread_limiters:
        limiter(threads)


_prediction_logger: Callable[[Sequence[Any], Sequence[Sequence[Any]], str | None], Any] | None
_prediction_logger = None


def register_prediction_logger(
    logger: Callable[[Sequence[Any], Sequence[Sequence[Any]], str | None], Any],
) -> None:
    """Install the function that sends predictions where ``log_predictions=True`` asks.

    The platform layer (:mod:`datamint_core.platform`) registers it when it is imported, as
    ``import datamint_core`` does, so the model (domain layer) never imports the platform.
    """
    global _prediction_logger
    _prediction_logger = logger


def log_predictions(resources: Sequence[Any], results: Sequence[Sequence[Any]],
                    model_name: str | None) -> None:
    """Send a prediction through the registered logger.

    Raises:
        RuntimeError: no logger is registered (``datamint_core.platform`` was not imported).
    """
    if _prediction_logger is None:
        raise RuntimeError(
            "log_predictions=True needs the Datamint platform layer: import datamint_core "
            "(or datamint_core.platform) before predicting, or leave log_predictions unset."
        )
    _prediction_logger(resources, results, model_name)


_file_reader: Callable[[str, str | None], Any] | None = None


def register_file_reader(reader: Callable[[str, str | None], Any]) -> None:
    """Install the function that reads a resource's file other than ``.npy``/``.npz``.

    ``reader(path, kind)`` returns what the file holds (:class:`datamint_core.io._decoded.
    Decoded`: pixels, geometry, descriptors) as ``kind``. ``import datamint_core`` registers
    the :mod:`datamint_core.io` readers, so a resource (domain layer) never imports them.
    """
    global _file_reader
    _file_reader = reader


def read_file(path: str, kind: str | None) -> Any:
    """Read ``path`` through the registered file reader.

    Raises:
        RuntimeError: no reader is registered (``datamint_core`` was not fully imported).
    """
    if _file_reader is None:
        raise RuntimeError(
            f"Reading {path!r} needs the file readers of datamint_core.io, which "
            "`import datamint_core` registers; import it before reading resources."
        )
    return _file_reader(path, kind)
