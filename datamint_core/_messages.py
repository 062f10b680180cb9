"""Messages a client or a user reads: bounded in size, never cut mid-word.

Every message that quotes something it did not write (an input, a remote server's answer, a
model's exception) passes through :func:`shorten` before it leaves the library, so that an
error answer stays a few kB whatever the input was.
"""

from __future__ import annotations

import re

#: The longest message an error answer carries, in characters.
MAX_MESSAGE_CHARS = 1000
_ELLIPSIS = "…"


def shorten(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` if it fits in ``limit`` characters; else its start, cut at the last word
    boundary, with an ellipsis.

    A single token longer than half the limit (base64, a long path) is cut inside itself,
    still with the ellipsis.

    Example::

        >>> shorten("Failed to establish a new connection", 20)
        'Failed to establish…'
    """
    if len(text) <= limit:
        return text
    head = text[: limit - len(_ELLIPSIS) + 1]
    boundary = max((space.start() for space in re.finditer(r"\s", head)), default=-1)
    if boundary >= limit // 2:
        head = head[:boundary]
    else:
        head = head[: limit - len(_ELLIPSIS)]
    return head.rstrip(" \t\r\n,;:(") + _ELLIPSIS


__all__ = ["MAX_MESSAGE_CHARS", "model_failure_message", "shorten"]


# An absolute path, a file: URI or a ~-relative path, with at least one directory in it.
_LOCAL_PATH = re.compile(
    r"""(?<![\w.:/~-])(?:file:(?://)?|~[\w.-]*)?(?:[A-Za-z]:)?[/\\](?:[^\s'"/\\]+[/\\])+"""
    r"""[^\s'"/\\]*(?<![,;:.)])""",
    re.IGNORECASE,
)


def model_failure_message(error: BaseException) -> str:
    """What a client is told of a model's own failure: its type and message, server-side
    file paths replaced by ``<path>``, at most 500 characters (cut at a word); never a stack
    trace."""
    text = _LOCAL_PATH.sub("<path>", f"{type(error).__name__}: {error}")
    return shorten(f"The model failed: {text}", 500)
