"""The one way the library writes a file: atomically (huggingface_hub's way).

The bytes go to a hidden temporary name in the target's own directory
(``.<name>.<random>.incomplete``), are ``fsync``\\ ed, then ``os.replace``\\ d onto the target.
A reader sees the old file or the whole new one, never a partial one; a crash leaves at most
a ``*.incomplete`` file beside it (batch output removes those on a rerun); a failed write
removes its temporary file. The rename, not a lock, is what makes concurrent writers safe:
the last one wins, whole.

Every writer uses it: the io writers (NIfTI, DICOM SEG, PNG, JSON), batch parts and mask
files, ``datamint evaluate``'s report, the platform config file, the bundled wheel, files
fetched from the platform, and ``mlflow models predict``'s output file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

#: Suffix of a file being written; a rerun of a batch job removes any a killed job left.
INCOMPLETE_SUFFIX = ".incomplete"


@contextlib.contextmanager
def atomic_path(
    target: str | os.PathLike[str], *, format_suffix: str = "", mode: int | None = None
) -> Iterator[str]:
    """Yield a temporary file name beside ``target``; when the block succeeds, the file there
    is ``fsync``\\ ed and renamed onto ``target``. On failure it is removed.

    For writers that take a file name (nibabel, pydicom, Pillow); :func:`write_atomically`
    is the shorter form for bytes and file objects.

    Args:
        target: the file to (re)place. Missing parent directories are created.
        format_suffix: ending the temporary name keeps, for a writer that picks its format
            by it (``".nii.gz"``, ``".png"``).
        mode: permission bits of the new file; ``None`` gives what ``open()`` would
            (``0o666`` less the umask). A secret passes ``0o600``: the file is never readable
            by others, not even for a moment.
    """
    directory, name = os.path.split(os.path.abspath(os.fspath(target)))
    os.makedirs(directory, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{name}.", suffix=INCOMPLETE_SUFFIX + format_suffix, dir=directory
    )
    try:
        # mkstemp creates the file 0600; before anything is written, give it its final mode.
        os.close(handle)
        os.chmod(temporary, _default_mode() if mode is None else mode)
        yield temporary
        _fsync(temporary)
        os.replace(temporary, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def write_atomically(
    target: str | os.PathLike[str],
    content: bytes | str | Callable[[BinaryIO], None],
    *,
    mode: int | None = None,
) -> Path:
    """Write ``content`` to ``target`` atomically (see :func:`atomic_path`); return the path.

    Args:
        content: the bytes, a text (written as UTF-8), or a function that writes to the
            binary file object it is given (``lambda file: np.savez(file, ...)``).
        mode: permission bits; see :func:`atomic_path`.
    """
    with atomic_path(target, mode=mode) as temporary, open(temporary, "wb") as file:
        if callable(content):
            content(file)
        else:
            file.write(content.encode("utf-8") if isinstance(content, str) else content)
    return Path(target)


def _fsync(path: str) -> None:
    """Flush ``path``'s data to disk, so that the rename never publishes an empty file."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _default_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` gives a new file."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux shows the umask without changing it; swapping it (the only portable way) would
    # briefly give files that other threads create meanwhile the wrong mode.
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


__all__ = ["INCOMPLETE_SUFFIX", "atomic_path", "write_atomically"]
