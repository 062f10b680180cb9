"""Decode uploaded files (multipart parts) with the readers of :mod:`datamint_core.io`.

The parts are written to a private temporary directory, read, and removed: one file is
read as what it is (DICOM, NIfTI, PNG, JPEG), several files as one DICOM series.
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
    """
    from datamint_core.io._read import decode_path

    directory = tempfile.mkdtemp(prefix="datamint-upload-")
    try:
        paths = []
        for index, (filename, stream) in enumerate(parts):
            path = os.path.join(directory, f"part-{index:05d}{_suffix(filename)}")
            stream.seek(0)
            with open(path, "wb") as file:
                shutil.copyfileobj(stream, file, _CHUNK)
            paths.append(path)
        return decode_path(paths[0] if len(paths) == 1 else directory, kind)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _suffix(filename: str | None) -> str:
    name = (filename or "").lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = os.path.splitext(name)[1]
    return suffix if _SAFE_SUFFIX.match(suffix) else ""
