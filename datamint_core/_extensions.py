"""Hooks the optional extras fill in; the core never imports them.

``datamint_torch`` registers its hardware detection here when it is imported, so a model
class that needs torch brings its own device detection with it, and a numpy-only model never
pays for importing torch. It also registers how many threads its operations may use, which
a batch worker sets so that the workers share the machine's cores. The platform layer
registers how predictions are logged to the Datamint platform; the package registers the
file readers of :mod:`datamint_core.io` that a resource built from a file path reads with,
and the MLflow integration layer (:mod:`datamint_core.linked_models`) how a model's
linked models are checked and loaded.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class LinkedModelSupport:
    """What a model needs to have linked models; the MLflow integration layer provides it.

    Attributes:
        check_uris: validates the ``{key: uri}`` mapping given to a model (``None`` is
            ``{}``) and returns it as a dict.
        load: ``load(uris, *, context, device, loaders)`` locates and loads ``{key: (uri,
            flavor)}``, each with ``loaders[flavor](path, device)`` (``python_function`` is
            built in); ``context`` is the ``load_context`` argument (the pinned records and
            the bundle saved with the model) or ``None`` for a model built in this process.
    """

    check_uris: Callable[[Any], dict[str, str]]
    load: Callable[..., dict[str, Any]]


_linked_model_support: LinkedModelSupport | None = None


def register_linked_model_support(support: LinkedModelSupport) -> None:
    """Install how linked models are checked and loaded.

    :mod:`datamint_core.linked_models` registers it when it is imported; ``import
    datamint_core`` registers a stand-in that imports it on first use, so the model (domain
    layer) never imports the integration layer and ``import datamint_core`` never imports
    MLflow.
    """
    global _linked_model_support
    _linked_model_support = support


def linked_model_support() -> LinkedModelSupport:
    """The registered linked-model support.

    Raises:
        RuntimeError: none is registered (``datamint_core`` was not imported).
    """
    if _linked_model_support is None:
        raise RuntimeError(
            "Linked models need the MLflow integration layer: import datamint_core (or "
            "datamint_core.linked_models) before building or loading a model that links others."
        )
    return _linked_model_support


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
