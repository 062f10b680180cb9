"""A plain-text progress line on stderr: rows done, rate, ETA, failures (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Report ``done/total`` rows with rate and ETA.

    On a terminal the line is redrawn in place at most every ``interval`` seconds; in a log
    file a new line is written every ``log_interval`` seconds, and always at the end.
    """

    def __init__(
        self,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool = True,
        interval: float = 0.2,
        log_interval: float = 10.0,
    ) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self._stream = stream or sys.stderr
        self._enabled = enabled
        self._terminal = self._stream.isatty()
        self._interval = interval if self._terminal else log_interval
        self._started = time.monotonic()
        self._shown = float("-inf")

    def update(self, done: int, failed: int) -> None:
        """Count ``done`` more rows, ``failed`` of them failed; redraw when due."""
        self.done += done
        self.failed += failed
        now = time.monotonic()
        if now - self._shown >= self._interval:
            self._shown = now
            self._show(end="" if self._terminal else "\n")

    def close(self) -> None:
        """Draw the final line."""
        self._show(end="\n")

    def line(self) -> str:
        """The progress text, e.g. ``batch: 64/120 rows (53%) | 12.3 rows/s | ETA 0:04``."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        remaining = max(self.total - self.done, 0)
        eta = _clock(remaining / rate) if rate > 0 else "?"
        percent = 100 * self.done / self.total if self.total else 100.0
        text = (
            f"batch: {self.done}/{self.total} rows ({percent:.0f}%) | {rate:.1f} rows/s | "
            f"ETA {eta} | elapsed {_clock(elapsed)}"
        )
        return text + (f" | {self.failed} failed" if self.failed else "")

    def _show(self, end: str) -> None:
        if not self._enabled:
            return
        prefix = "\r" if self._terminal else ""
        self._stream.write(prefix + self.line() + end)
        self._stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
