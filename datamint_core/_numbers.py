"""The one parser of numbers that users type: command-line flags, environment variables,
settings.

Each kind of number is a :class:`ValueKind` that says what it accepts; a bad value is a
``ValueError`` naming the setting, the value and what is accepted, never a traceback::

    >>> parse(SIZE, "512MiB", "--max-request-size")
    536870912
    >>> parse(COUNT, "0", "DATAMINT_SERVE_MAX_SLICES")
    Traceback (most recent call last):
    ValueError: DATAMINT_SERVE_MAX_SLICES='0' is not valid; accepted: a positive integer.

==========  =====================================================  ===========================
kind        accepted                                               examples
==========  =====================================================  ===========================
COUNT       a positive integer                                     ``4``, ``4096``
AMOUNT      a positive integer, with an optional K, M, G, T        ``1000``, ``1M``
SIZE        a positive byte count, with an optional K, M, G, T     ``1048576``, ``512M``,
            (and B or iB)                                          ``512MiB``, ``2GB``, ``1.5G``
SECONDS     a positive number of seconds                           ``30``, ``0.5``
MILLIMETRES a number of millimetres, 0 or more                     ``0``, ``1.5``
PORT        a TCP port, 0 to 65535                                 ``8080``
==========  =====================================================  ===========================

Suffixes are powers of 1024 (``1K`` = 1024, ``1GB`` = ``1GiB``), case-insensitive.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from collections.abc import Callable
from typing import Any

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_WITH_UNIT = re.compile(
    r"(?P<number>(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:E[+-]?[0-9]+)?)\s*(?:(?P<unit>[KMGT])I?)?B?",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class ValueKind:
    """One kind of value (a number here; text, a flag or a path list in ``_env``): how a value
    is read, and what is accepted (for the message)."""

    read: Callable[[Any], Any]  # the value, or ValueError/TypeError/OverflowError
    accepted: str


def parse(kind: ValueKind, value: object, name: str) -> Any:
    """Read ``value`` (a string, or an int/float given in code) as ``kind``.

    Args:
        name: what the value was given as (a flag, a variable, an argument), for the message.

    Raises:
        ValueError: ``{name}={value!r} is not valid; accepted: {kind.accepted}.``
    """
    try:
        return kind.read(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name}={value!r} is not valid; accepted: {kind.accepted}.") from None


def argument_type(kind: ValueKind) -> Callable[[str], Any]:
    """An argparse ``type=`` for ``kind``: a bad flag value is a usage error (exit 2) saying
    ``argument --flag: '0' is not valid; accepted: a positive integer.``"""

    def read(text: str) -> Any:
        try:
            return kind.read(text)
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not valid; accepted: {kind.accepted}."
            ) from None

    return read


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError
    return int(value)  # a str: digits, an optional sign, surrounding spaces


def _count(value: object) -> int:
    number = _integer(value)
    if number < 1:
        raise ValueError
    return number


def _port(value: object) -> int:
    number = _integer(value)
    if not 0 <= number <= 65535:
        raise ValueError
    return number


def _with_unit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError
    if isinstance(value, int):
        number = value
    else:
        text = value.strip()
        match = _WITH_UNIT.fullmatch(text)
        if match is None:
            raise ValueError
        digits, multiplier = match["number"], _UNITS[(match["unit"] or "").upper()]
        if digits.isdigit():
            number = int(digits) * multiplier  # exact, however large
        else:
            number = int(float(digits) * multiplier)  # 1.5M; 1e400 is an OverflowError
    if number < 1:
        raise ValueError
    return number


def _real(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError
    number = float(value)
    if not math.isfinite(number):  # NaN and infinity
        raise ValueError
    return number


def _seconds(value: object) -> float:
    number = _real(value)
    if number <= 0:
        raise ValueError
    return number


def _millimetres(value: object) -> float:
    number = _real(value)
    if number < 0:
        raise ValueError
    return number


COUNT = ValueKind(_count, "a positive integer")
AMOUNT = ValueKind(
    _with_unit, "a positive integer, optionally with a K, M, G or T suffix (powers of 1024: 1M)"
)
SIZE = ValueKind(
    _with_unit,
    "a byte count (a positive integer), optionally with a K, M, G or T suffix (powers of 1024: "
    "512M, 512MiB, 2GB)",
)
SECONDS = ValueKind(_seconds, "a positive number of seconds")
MILLIMETRES = ValueKind(_millimetres, "a number of millimetres, 0 or more")
PORT = ValueKind(_port, "a TCP port number from 0 to 65535")


def parse_size(size: int | str, name: str = "Size") -> int:
    """Read a byte count: ``1048576``, ``512K``, ``100M``, ``512MiB``, ``2GB`` or ``1.5G``
    (powers of 1024).

    Raises:
        ValueError: anything else, or a count that is not positive; the message says what
            is accepted.
    """
    return int(parse(SIZE, size, name))


__all__ = [
    "AMOUNT",
    "COUNT",
    "MILLIMETRES",
    "PORT",
    "SECONDS",
    "SIZE",
    "ValueKind",
    "argument_type",
    "parse",
    "parse_size",
]
