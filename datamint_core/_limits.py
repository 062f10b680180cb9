"""Per-request limits that every decoder and every bridge loop checks.

Limits belong to the wire: they protect a server from its clients. One place decides how
much pixel data a request may decode, how many slices or frames it may run, and when it
must stop, and they apply only where limits are *applied* (:func:`applying`):

- ``datamint serve`` applies its flags to each request, in the thread that decodes and
  predicts;
- the pyfunc scoring path under ``mlflow models serve`` applies the environment's limits
  (:meth:`RequestLimits.from_env`) and MLflow's request timeout as the deadline;
- a user may apply limits to their own code (``with request_limits(max_slices=100): ...``).

Everywhere else (an in-process ``predict``, ``io.read``, ``VolumeResource(path=...)``,
``datamint predict``, ``datamint batch``) nothing is limited: a user's own data in their own
process is as large as it is.

- decoded pixel bytes per request: ``DATAMINT_SERVE_MAX_DECODED_BYTES`` (``--max-decoded-bytes``),
  default 1 GiB, checked from the declared shape x itemsize *before* anything is allocated;
- slices or frames one request may run through a bridge: ``DATAMINT_SERVE_MAX_SLICES``
  (``--max-slices``), default 4096;
- a deadline (``time.monotonic()``), checked at every slice, frame, patch batch and resource
  boundary (:func:`check_deadline`).

A reader of a new format (DICOM, NIfTI, PNG, ...) calls :func:`check_decoded_size` with the
shape and dtype its header declares before it decodes the pixels, and :func:`check_deadline`
between the slices or frames it decodes one by one.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from datamint_core._env import DATAMINT_SERVE_MAX_DECODED_BYTES, DATAMINT_SERVE_MAX_SLICES
from datamint_core._numbers import COUNT, SECONDS, SIZE, ValueKind, parse
from datamint_core.errors import InputTooLargeError, RequestDeadlineExceeded

#: More dimensions than any resource has; a header declaring more is not pixel data.
MAX_DIMENSIONS = 8


@dataclasses.dataclass
class RequestLimits:
    """The limits of one request, and what it has decoded so far.

    The defaults are the servers' defaults; ``None`` is no limit.

    Args:
        max_decoded_bytes: pixel bytes the request may decode, all arrays together.
        max_slices: slices or frames the request may run through a bridge.
        deadline: ``time.monotonic()`` value after which work stops; ``None``: no deadline.
    """

    max_decoded_bytes: int | None = DATAMINT_SERVE_MAX_DECODED_BYTES.default
    max_slices: int | None = DATAMINT_SERVE_MAX_SLICES.default
    deadline: float | None = None
    decoded_bytes: int = 0

    @classmethod
    def from_env(cls, deadline: float | None = None) -> RequestLimits:
        """The environment's server limits (or the servers' defaults).

        Raises:
            ValueError: a variable that is not a positive number.
        """
        return cls(
            max_decoded_bytes=DATAMINT_SERVE_MAX_DECODED_BYTES.get(),
            max_slices=DATAMINT_SERVE_MAX_SLICES.get(),
            deadline=deadline,
        )

    @classmethod
    def unlimited(cls) -> RequestLimits:
        """No limit at all: what a user's own process runs under."""
        return cls(max_decoded_bytes=None, max_slices=None, deadline=None)


_ACTIVE: contextvars.ContextVar[RequestLimits | None] = contextvars.ContextVar(
    "datamint_request_limits", default=None
)


@contextlib.contextmanager
def applying(limits: RequestLimits) -> Iterator[RequestLimits]:
    """Apply ``limits`` to the decoding and prediction done inside the block (this thread)."""
    token = _ACTIVE.set(limits)
    try:
        yield limits
    finally:
        _ACTIVE.reset(token)


@contextlib.contextmanager
def request_limits(
    max_decoded_bytes: int | str | None = None,
    max_slices: int | None = None,
    timeout_s: float | None = None,
) -> Iterator[RequestLimits]:
    """Limit the decoding and prediction done inside the block, as a server limits a request.

    In-process work has no limits; use this to give your own code some (each ``None`` is no
    limit). ``datamint serve`` and ``mlflow models serve`` apply theirs to every request.

    Example::

        with request_limits(max_decoded_bytes="2G", max_slices=1000, timeout_s=60):
            model.predict(untrusted_resources, {"mode": "volume"})

    Raises:
        ValueError: a limit that is not a positive number.
    """
    def read(kind: ValueKind, value: Any, name: str) -> Any:
        return None if value is None else parse(kind, value, name)

    timeout = read(SECONDS, timeout_s, "timeout_s")
    limits = RequestLimits(
        max_decoded_bytes=read(SIZE, max_decoded_bytes, "max_decoded_bytes"),
        max_slices=read(COUNT, max_slices, "max_slices"),
        deadline=time.monotonic() + timeout if timeout is not None else None,
    )
    with applying(limits):
        yield limits


def limits_applied() -> bool:
    """Whether this code runs under a request's (or a user's) limits: input that may be
    hostile. Outside, it is the user's own."""
    return _ACTIVE.get() is not None


def active_limits() -> RequestLimits:
    """The limits of the current request; outside one, :meth:`RequestLimits.unlimited`."""
    limits = _ACTIVE.get()
    return limits if limits is not None else RequestLimits.unlimited()


def check_decoded_size(shape: Sequence[Any], itemsize: int, where: str) -> int:
    """Check that an array of ``shape`` x ``itemsize`` fits the request's decode budget.

    Call it with what a header *declares*, before allocating; the bytes are charged to the
    current request, so several arrays share one budget. Outside a request (no limits
    applied) only the shape is checked.

    Returns:
        The array's size in bytes.

    Raises:
        InputTooLargeError: over the budget (HTTP 413); names the limit and its flag.
        ValueError: a dimension that is not a non-negative integer, or more than
            :data:`MAX_DIMENSIONS` of them.
    """
    if len(shape) > MAX_DIMENSIONS:
        raise ValueError(
            f"{where} declares {len(shape)} dimensions; pixel data has at most {MAX_DIMENSIONS}."
        )
    if not all(type(size) is int and size >= 0 for size in shape):
        raise ValueError(
            f"{where} declares the shape {tuple(shape)!r}; accepted: non-negative integers."
        )
    nbytes = math.prod(shape) * itemsize  # Python integers: no overflow
    # numpy refuses a shape whose non-zero dimensions multiply past its index range even when
    # another dimension is 0 (an empty array): "array is too big", a ValueError at allocation.
    extent = math.prod(max(size, 1) for size in shape) * max(itemsize, 1)
    if extent > sys.maxsize:
        raise ValueError(
            f"{where} declares the shape {tuple(shape)!r}, which no array can have: its "
            f"dimensions multiply past {sys.maxsize} bytes; accepted: a shape whose non-zero "
            "dimensions multiply, times the item size, to less than that."
        )
    limits = _ACTIVE.get()
    if limits is None or limits.max_decoded_bytes is None:
        return nbytes  # a user's own process: no budget
    if limits.decoded_bytes + nbytes > limits.max_decoded_bytes:
        already = f" after {limits.decoded_bytes} bytes already" if limits.decoded_bytes else ""
        raise InputTooLargeError(
            f"{where} would decode to {nbytes} bytes (shape {tuple(shape)}, {itemsize} bytes "
            f"per value){already}, over the limit of {limits.max_decoded_bytes} decoded bytes "
            f"per request (--max-decoded-bytes, {DATAMINT_SERVE_MAX_DECODED_BYTES}); send "
            "smaller or fewer arrays."
        )
    limits.decoded_bytes += nbytes
    return nbytes


def check_slice_count(count: int, what: str) -> None:
    """Check that one request runs at most ``max_slices`` slices or frames (no limit outside a
    request).

    Raises:
        InputTooLargeError: more than the limit (HTTP 413); names the limit and its flag.
    """
    limits = _ACTIVE.get()
    limit = limits.max_slices if limits is not None else None
    if limit is not None and count > limit:
        raise InputTooLargeError(
            f"The request would run {count} {what}, over the limit of {limit} per request "
            f"(--max-slices, {DATAMINT_SERVE_MAX_SLICES}); send fewer or smaller inputs."
        )


def current_deadline() -> float | None:
    """The current request's deadline (``time.monotonic()``), or ``None``."""
    limits = _ACTIVE.get()
    return limits.deadline if limits is not None else None


def check_deadline() -> None:
    """Stop here when the current request's deadline has passed (a no-op outside a request).

    The cancellation hook of long loops: bridges call it between slices, frames and patch
    batches, readers between the slices or frames they decode one by one, so that a request
    whose client already got its 504 stops burning a core. It costs one context lookup.

    Raises:
        RequestDeadlineExceeded: the deadline passed.
    """
    limits = _ACTIVE.get()
    if limits is not None and limits.deadline is not None and time.monotonic() > limits.deadline:
        raise RequestDeadlineExceeded("The request's deadline passed.")


__all__ = [
    "InputTooLargeError",
    "RequestDeadlineExceeded",
    "RequestLimits",
    "active_limits",
    "applying",
    "check_deadline",
    "check_decoded_size",
    "check_slice_count",
    "current_deadline",
    "limits_applied",
    "request_limits",
]
