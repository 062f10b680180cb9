"""Atomic file writes for batch output: a temporary name beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO

#: Suffix of files being written; a rerun removes any a killed job left behind.
INCOMPLETE_SUFFIX = ".incomplete"


def write_atomically(target: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a hidden temporary file beside ``target``, then rename it into place.

    Readers see the old file, or the whole new one, never a partial one; the temporary file
    is removed if ``write`` fails.
    """
    directory, name = os.path.split(os.fspath(target))
    os.makedirs(directory or ".", exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{name}.", suffix=INCOMPLETE_SUFFIX, dir=directory or "."
    )
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
