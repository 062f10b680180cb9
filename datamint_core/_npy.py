"""The safe ``.npy``/``.npz`` decoder (and its base64 form): what every pixel file and
upload in numpy's format is read with.

Never unpickles and never evaluates a header: the header dict is parsed by a pattern, its
dtype must be plain numeric (:func:`check_pixel_dtype`) and its declared size is checked
against the decode budget (:mod:`datamint_core._limits`) before anything is allocated; the
file must then hold that many bytes. A user's own ``.npy`` (outside a request) is mapped
copy-on-write instead of read.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import zipfile
import zlib
from typing import Any

import numpy as np

from datamint_core._limits import active_limits, check_decoded_size, limits_applied
from datamint_core.errors import InputTooLargeError, ResourceError

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
#: The suffixes of the files this module reads.
ARRAY_SUFFIXES = (".npy", ".npz")
_READ_CHUNK = 8 * 1024**2
#: numpy's own limit on a .npy header (numpy.lib.format, max_header_size).
_MAX_NPY_HEADER = 10000
_NPY_HEADER_ITEM = re.compile(
    r"""\s*['"](descr|fortran_order|shape)['"]\s*:\s*"""
    r"""(?:'([^'\\]*)'|"([^"\\]*)"|(True|False)|\(([0-9,\sL]*)\))\s*(,|(?=\}))"""
)
_ACCEPTED_DTYPES = ("bool", "uint8", "int16", "int32", "int64", "float16", "float32", "float64")
_ACCEPTED_FILES = (
    "Accepted: a numeric array written by numpy.save (.npy) or numpy.savez (.npz with one array)."
)


def encode_npy_base64(array: np.ndarray) -> str:
    """Encode an array as base64 of its ``.npy`` bytes (exact dtype and shape)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return base64.b64encode(buffer.getbuffer()).decode("ascii")


def decode_npy_base64(text: str) -> np.ndarray:
    """Decode what :func:`encode_npy_base64` wrote; never unpickles.

    The array's declared size is checked against the request's decode budget
    (:mod:`datamint_core._limits`) before anything is allocated.

    Raises:
        ResourceError: not base64, or not the bytes of a numeric ``.npy`` array.
        InputTooLargeError: the declared array is over the decode budget.
    """
    if not isinstance(text, (str, bytes)):
        raise ResourceError(f"npy_base64 data must be a string; got {type(text).__name__}.")
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise ResourceError("pixel data is not valid base64.") from None
    return load_array(io.BytesIO(raw), "the base64 pixel data", ".npy")


def check_pixel_dtype(dtype: Any, where: str = "pixel data") -> np.dtype:
    """Return ``dtype`` as a numpy dtype if it is a plain numeric or boolean scalar type.

    Sub-array dtypes (``"(6000,6000)f8"``), structured, object, complex, datetime, void and
    string dtypes are refused: none of them is pixel data, and some allocate far more than
    their declared shape says.

    Raises:
        ResourceError: anything else; names the accepted dtypes.
    """
    try:
        parsed = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError):
        parsed = None
    if parsed is None or parsed.kind not in "biuf" or parsed.subdtype is not None or parsed.fields:
        shown = str(parsed) if parsed is not None else repr(dtype)
        raise ResourceError(
            f"{where} has dtype {shown[:80]}; accepted: a plain numeric or boolean dtype "
            f"({', '.join(_ACCEPTED_DTYPES)})."
        )
    return parsed



def is_array_file(path: str) -> bool:
    """Whether ``path`` names a ``.npy``/``.npz`` file (by its suffix)."""
    return os.path.splitext(path)[1].lower() in ARRAY_SUFFIXES


def read_array_file(path: str) -> np.ndarray:
    """Read the one array of a local ``.npy``/``.npz`` file (see :func:`load_array`).

    Raises:
        ResourceError: another suffix, no such file, or a file :func:`load_array` refuses.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in ARRAY_SUFFIXES:
        raise ResourceError(
            f"Cannot read pixel data from {path!r}: accepted local files are .npy and .npz."
        )
    if not os.path.isfile(path):
        raise ResourceError(f"Cannot read pixel data from {path!r}: no such file.")
    with open(path, "rb") as file:
        return load_array(file, repr(path), suffix)


def load_npz(file: Any, where: str) -> dict[str, np.ndarray]:
    """Read every array of an open, seekable ``.npz`` file, each checked as :func:`load_array`
    checks a ``.npy``.

    The zip's declared sizes are checked against the decode budget before any member is
    read, and each member's ``.npy`` header before its array is allocated.

    Returns:
        ``{name: array}``, names without their ``.npy`` suffix, in archive order.

    Raises:
        ResourceError: not an ``.npz`` archive, or a member that is not a numeric ``.npy``.
        InputTooLargeError: the arrays are over the decode budget.
    """
    try:
        with zipfile.ZipFile(file) as archive:
            members = archive.infolist()
            declared = sum(member.file_size for member in members)
            budget = active_limits().max_decoded_bytes
            if budget is not None and declared > budget:
                check_decoded_size([declared], 1, where)  # raises, naming the limit
            arrays = {}
            for member in members:
                name = member.filename
                if not name.endswith(".npy"):
                    raise _unreadable(where, f"member {name[:100]!r} is not an .npy array")
                with archive.open(member) as stream:
                    if stream.read(len(NPY_MAGIC)) != NPY_MAGIC:
                        raise _unreadable(where, f"member {name[:100]!r} is not .npy bytes")
                    arrays[name[: -len(".npy")]] = _read_npy_body(
                        stream, f"{where} (member {name[:100]!r})", member.file_size
                    )
            return arrays
    except (ResourceError, InputTooLargeError):
        raise
    except (
        OSError,
        EOFError,
        ValueError,
        RuntimeError,  # an encrypted member
        NotImplementedError,  # an unknown compression method
        zipfile.BadZipFile,
        zlib.error,
    ) as error:
        raise _unreadable(where, f"{type(error).__name__}: {error}") from None



def load_array(file: Any, where: str, suffix: str) -> np.ndarray:
    """Read one numeric array from an open, seekable ``.npy``/``.npz`` (``suffix``) file.

    The header is read first; its dtype and declared size are checked (see
    :func:`check_pixel_dtype`, :func:`datamint_core._limits.check_decoded_size`) and the
    file must hold that many bytes before the array is allocated; never unpickles. See
    :func:`load_npz` for the ``.npz`` checks; an ``.npz`` given here must hold one array.

    Raises:
        ResourceError: not ``.npy``/``.npz`` bytes, a dtype that is not plain numeric, or
            fewer bytes than the header declares.
        InputTooLargeError: the declared array is over the decode budget.
    """
    magic = NPY_MAGIC if suffix == ".npy" else ZIP_MAGIC
    if file.read(len(magic)) != magic:
        raise _unreadable(where, f"it is not a {suffix} file (its first bytes are wrong)")
    if suffix == ".npy":
        start = file.tell()
        available = file.seek(0, os.SEEK_END) - start
        file.seek(start)
        # A user's own file (no request limits) is mapped copy-on-write, not read: a 1 GB
        # volume costs the pages a model touches, shared with the page cache. A request's
        # file is read, so that no client-reachable file can change under the server.
        name = getattr(file, "name", None)
        map_path = name if isinstance(name, str) and not limits_applied() else None
        return _read_npy_body(file, where, available + len(magic), map_path)
    file.seek(0)
    arrays = load_npz(file, where)
    if len(arrays) != 1:
        raise _unreadable(
            where, f"it holds {len(arrays)} arrays ({sorted(arrays)[:10]}); a resource file "
            "must hold one"
        )
    return next(iter(arrays.values()))


def _read_npy_body(
    stream: Any, where: str, size: int, map_path: str | None = None
) -> np.ndarray:
    """Read a ``.npy`` after its magic: header, checks, then exactly the declared bytes.

    Args:
        size: bytes the whole ``.npy`` has (magic included), as its container declares.
        map_path: the regular file ``stream`` reads, to map copy-on-write instead of reading
            (after the same checks).
    """
    version = stream.read(2)
    if len(version) != 2 or version[0] not in (1, 2, 3):
        raise _unreadable(where, "its .npy version is not 1, 2 or 3")
    length_bytes = stream.read(2 if version[0] == 1 else 4)
    header_length = int.from_bytes(length_bytes, "little")
    if len(length_bytes) not in (2, 4) or header_length > _MAX_NPY_HEADER:
        raise _unreadable(where, f"its .npy header is longer than {_MAX_NPY_HEADER} bytes")
    header = stream.read(header_length)
    if len(header) != header_length:
        raise _unreadable(where, "its .npy header is cut short")
    descr, fortran_order, shape = _parse_npy_header(
        header.decode("utf-8" if version[0] == 3 else "latin-1", errors="replace"), where
    )
    try:
        dtype = check_pixel_dtype(descr, "its array")
    except ResourceError as error:
        pickled = "O" in descr.upper() and "object" in str(error)
        reason = "it holds pickled Python objects, which are never loaded" if pickled else error
        raise _unreadable(where, str(reason).rstrip(".")) from None
    try:
        nbytes = check_decoded_size(shape, dtype.itemsize, f"the array in {where}")
    except InputTooLargeError:
        raise
    except ValueError as error:
        raise _unreadable(where, str(error).rstrip(".")) from None
    available = size - len(NPY_MAGIC) - 2 - len(length_bytes) - header_length
    if available < nbytes:
        raise _unreadable(
            where, f"it is not fully written: its header declares shape {shape} of {dtype} "
            f"({nbytes} bytes) but it holds {max(available, 0)} bytes of data"
        )
    if map_path is not None and nbytes and os.path.isfile(map_path):
        order = "F" if fortran_order else "C"
        offset = stream.tell()
        return np.memmap(map_path, dtype=dtype, mode="c", offset=offset, shape=shape, order=order)
    array = np.empty(math.prod(shape), dtype=dtype)
    buffer = memoryview(array.view(np.uint8))
    filled = 0
    while filled < nbytes:
        # Chunks, so that other threads (the server's event loop) get the GIL in between.
        count = stream.readinto(buffer[filled : filled + _READ_CHUNK])
        if not count:
            raise _unreadable(
                where, f"it is not fully written: it ends after {filled} of the {nbytes} bytes "
                "its header declares"
            )
        filled += count
    if fortran_order:
        return array.reshape(shape[::-1]).transpose()
    return array.reshape(shape)


def _parse_npy_header(text: str, where: str) -> tuple[str, bool, tuple[int, ...]]:
    """Parse numpy's header dict (``{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}``)
    without evaluating it; anything else (a structured dtype's list among them) is refused."""
    refused = _unreadable(
        where, "its .npy header is not the dict numpy.save writes for a plain numeric array"
    )
    body = text.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise refused
    position, end, items = 1, len(body) - 1, {}
    while body[position:end].strip():
        match = _NPY_HEADER_ITEM.match(body, position, end)
        if match is None or match.group(1) in items:
            raise refused
        key, single, double, flag, dims = match.group(1, 2, 3, 4, 5)
        items[key] = (single if single is not None else double, flag, dims)
        position = match.end()
    try:
        descr, fortran, shape = items["descr"][0], items["fortran_order"][1], items["shape"][2]
    except KeyError:
        raise refused from None
    if descr is None or fortran is None or shape is None:
        raise refused
    parts = [part.strip().rstrip("L") for part in shape.split(",")]
    if parts and not parts[-1]:
        parts.pop()
    if not all(part.isdigit() for part in parts):
        raise refused
    return descr, fortran == "True", tuple(int(part) for part in parts)


def _unreadable(where: str, reason: str) -> ResourceError:
    return ResourceError(f"Cannot read pixel data from {where}: {reason}. {_ACCEPTED_FILES}")

