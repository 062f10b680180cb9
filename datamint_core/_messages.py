"""Messages a client or a user reads: bounded in size, never cut mid-word.

Every message that quotes something it did not write (an input, a remote server's answer, a
model's exception) passes through :func:`shorten` before it leaves the library, so that an
error answer stays a few kB whatever the input was.
"""

from __future__ import annotations

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
    boundary = max(head.rfind(" "), head.rfind("\n"))
    if boundary >= limit // 2:
        head = head[:boundary]
    else:
        head = head[: limit - len(_ELLIPSIS)]
    return head.rstrip(" \n,;:(") + _ELLIPSIS


__all__ = ["MAX_MESSAGE_CHARS", "shorten"]
