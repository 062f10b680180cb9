"""What every reader checks before it trusts a file, and how it words a failure.

- A file is named by its *name* only (``'IM0001.dcm'``): never its directory (a server's
  upload directory is private) and never its bytes.
- A third-party error (pydicom, nibabel, Pillow, numpy) is reworded by :func:`reason`:
  paths become file names, quoted bytes are dropped, and the text is cut at a word.
- A declared size is compared with what the file can hold (:func:`check_held`) before any
  per-frame or per-slice work: a few hundred bytes declaring gigabytes is refused at once.
"""

from __future__ import annotations

import os
import re

from datamint_core.errors import ResourceError

#: DEFLATE (gzip, zlib, PNG) expands at most 1032-fold, so compressed data can never
#: decode to more than this many times its own size.
DEFLATE_MAX_RATIO = 1032
_BYTES_LITERAL = re.compile(r"""\bb(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")""")
_QUOTED = re.compile(r"""(?<!\w)(?:'[^'\n]*'|"[^"\n]*")""")
_REASON_LENGTH = 240


def file_name(path: str | os.PathLike[str]) -> str:
    """The quoted name of a file or directory, without where it lies: ``'IM0001.dcm'``."""
    return repr(os.path.basename(os.path.normpath(os.fspath(path))))


def reason(error: BaseException, path: str | os.PathLike[str]) -> str:
    """A library's error as a short reason: no path but the file's name, no quoted bytes.

    Args:
        error: what pydicom, nibabel, Pillow or numpy raised.
        path: the file being read (its directory is removed from the text).
    """
    text = str(error) or type(error).__name__
    path = os.fspath(path)
    name = os.path.basename(os.path.normpath(path))
    # Longest first, so that a path's directory never survives inside a longer one; a link's
    # target is named by the link's own name.
    for where in sorted({path, os.path.abspath(path), os.path.realpath(path)}, key=len)[::-1]:
        text = text.replace(where, name)
    text = _BYTES_LITERAL.sub("(bytes)", text)
    # A quoted text in a library's message is usually a value from the file: drop it.
    text = _QUOTED.sub(lambda quoted: quoted[0] if quoted[0][1:-1] == name else "(text)", text)
    text = " ".join(text.split())  # one line
    if len(text) > _REASON_LENGTH:
        text = text[:_REASON_LENGTH].rsplit(" ", 1)[0] + " ..."
    return text


def check_held(declared: int, held: int, what: str, path: str | os.PathLike[str]) -> None:
    """Refuse a file whose header declares more data than the file can hold.

    Args:
        declared: bytes the header declares.
        held: the most bytes the file's data can decode to.
        what: what declares it, e.g. ``"NumberOfFrames=400000 of 512x512 16-bit pixels"``.
        path: the file.

    Raises:
        ResourceError: ``declared > held``; the message names the file and what declared it.
    """
    if declared > held:
        raise ResourceError(
            f"{file_name(path)} declares {what} ({declared} bytes), but the file can hold at "
            f"most {max(held, 0)} bytes of pixel data: its header does not describe its contents "
            "(a truncated or forged file). Accepted: a file holding every pixel its header "
            "declares."
        )
