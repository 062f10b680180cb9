"""Decode uploaded files (multipart parts) with the readers of :mod:`datamint_core.io`.

The parts are written to a private temporary directory, read, and removed: one file is
read as what it is (DICOM, NIfTI, PNG, JPEG), several files as one DICOM series. An error
names the parts by their upload filenames, never by the server's temporary paths.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from typing import BinaryIO

from datamint_core.io._decoded import Decoded

_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,8}$")
_CHUNK = 1 << 20


def decode_uploads(
    parts: Sequence[tuple[str | None, BinaryIO]], kind: str | None = None
) -> Decoded:
    """Read uploaded files as one resource's pixels and geometry.

    Args:
        parts: ``(filename, stream)`` pairs; the filename's suffix (``.nii.gz``, ``.dcm``)
            helps detection, nothing else of it is used.
        kind: ``image``, ``volume`` or ``video`` when the request names one.

    Raises:
        ResourceError: the files cannot be read (the message says why and what is accepted).
        InputTooLargeError: the files declare more pixels than the decode budget.
    """
    from datamint_core.errors import InputTooLargeError, ResourceError
    from datamint_core.io._read import decode_path

    directory = tempfile.mkdtemp(prefix="datamint-upload-")
    names: dict[str, str] = {}
    try:
        paths = []
        for index, (filename, stream) in enumerate(parts):
            path = os.path.join(directory, f"part-{index:05d}{_suffix(filename)}")
            names[path] = _shown_name(filename, index)
            stream.seek(0)
            with open(path, "wb") as file:
                shutil.copyfileobj(stream, file, _CHUNK)
            paths.append(path)
        return decode_path(paths[0] if len(paths) == 1 else directory, kind)
    except (ResourceError, InputTooLargeError) as error:
        error.args = (_without_paths(str(error), directory, names),)
        raise
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _shown_name(filename: str | None, index: int) -> str:
    """How an error names an uploaded part: its filename (no directories), else its place."""
    base = os.path.basename((filename or "").replace("\\", "/"))
    printable = "".join(char for char in base if char.isprintable())[:100]
    return f"the uploaded file {printable!r}" if printable else f"uploaded file #{index + 1}"


def _without_paths(message: str, directory: str, names: dict[str, str]) -> str:
    """``message`` with each temporary path (quoted or not) replaced by its part's name."""
    shown = {}
    # Readers name a series by its directory's name alone, as well as by its path.
    for form in (directory, os.path.basename(directory)):
        shown[repr(form)] = shown[form] = "the uploaded series"
    for path, name in names.items():
        for form in (path, os.path.basename(path)):
            shown[repr(form)] = shown[form] = name
    pattern = "|".join(re.escape(text) for text in sorted(shown, key=len, reverse=True))
    return re.sub(pattern, lambda match: shown[match.group(0)], message)


def _suffix(filename: str | None) -> str:
    name = (filename or "").lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = os.path.splitext(name)[1]
    return suffix if _SAFE_SUFFIX.match(suffix) else ""
