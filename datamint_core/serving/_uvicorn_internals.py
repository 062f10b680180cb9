"""uvicorn's h11 protocol with a read deadline: the one place datamint uses uvicorn's internals.

Public uvicorn API used: ``uvicorn.Config(http=...)`` (and ``uvicorn.run(http=...)``) takes
the HTTP protocol; uvicorn builds one per connection by calling it with ``config=``,
``server_state=`` and ``app_state=``, so a callable that returns a protocol serves as well as a
class. :func:`guarded_h11_protocol` gives such a callable per server (a
``functools.partial``, which pickles, so ``--workers`` processes receive it too): no class
attribute is changed, and two servers in one process keep their own timeouts.

Private, and why: uvicorn has no setting for a deadline on reading a request (its
``timeout_keep_alive`` only covers the wait *between* requests), so
:class:`GuardedH11Protocol` subclasses ``uvicorn.protocols.http.h11_impl.H11Protocol``, which
uvicorn does not document, and relies on:

- ``connection_made`` / ``data_received`` / ``connection_lost`` being the asyncio entry points
  it overrides (asyncio's public protocol API, passed on to uvicorn);
- ``self.conn`` (its ``h11.Connection``: ``their_state`` leaves ``h11.IDLE`` once a request
  head is complete), ``self.cycle`` (the request in flight, ``response_complete``),
  ``self.connections`` (the server's set of open protocols), ``self.limit_concurrency``,
  ``self.loop`` and ``self.transport``;
- ``data_received`` starting the request's task, so the task inherits the context variable
  :data:`READ_STARTED` set just before (the body's share of the deadline is kept by the ASGI
  wrapper :func:`datamint_core.serving.app.guard_reads`, which reads it).

``tests/compat/test_uvicorn_internals.py`` runs real uvicorn servers against each of these, so
a uvicorn release that changes one fails there (``scripts/compat`` runs it against the newest).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

_logger = logging.getLogger(__name__)

#: When the first byte of the request being read arrived (``time.monotonic()``); set by
#: :class:`GuardedH11Protocol` and inherited by the request's task.
READ_STARTED: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "datamint_read_started", default=None
)


def guarded_h11_protocol(
    read_timeout: float, timeout_answer: bytes
) -> Callable[..., asyncio.Protocol]:
    """The HTTP protocol for ``uvicorn.Config(http=...)``: h11 with a read deadline.

    Args:
        read_timeout: seconds a client has, from its first byte, to send a request head.
        timeout_answer: the whole HTTP response (status line, headers, body) written to a
            client that sent part of a head and no more in time.
    """
    if not read_timeout > 0:
        raise ValueError(
            f"read_timeout must be a positive number of seconds, got {read_timeout!r}."
        )
    return functools.partial(
        GuardedH11Protocol, read_timeout=float(read_timeout), timeout_answer=timeout_answer
    )


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline on reading each request's head.

    The clock starts when a connection opens, and again at the first byte of each following
    request; a client that has not sent a complete head by ``read_timeout`` gets
    ``timeout_answer`` (nothing, if it sent nothing) and is disconnected, with one DEBUG line.
    The body's share of the same deadline is kept by the ASGI app (through
    :data:`READ_STARTED`).

    At most ``limit_concurrency - 1`` connections stay open (uvicorn answers 503 to requests
    at ``limit_concurrency``): a new one past that closes the oldest connection with no
    request in flight (idle, half-open, or still sending its head), or, when every
    connection has a request in flight, is closed itself at once.

    Build it through :func:`guarded_h11_protocol`.
    """

    def __init__(
        self, *args: Any, read_timeout: float, timeout_answer: bytes, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self._timeout_answer = timeout_answer
        self._read_timer: asyncio.TimerHandle | None = None
        self._read_started = time.monotonic()
        self._received_any = False

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_started = time.monotonic()
        if self.limit_concurrency is not None and not self._make_room(self.limit_concurrency - 1):
            _logger.debug("Every connection has a request in flight: closing a new one at once.")
            transport.close()
            return
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _make_room(self, most: int) -> bool:
        """Keep at most ``most`` connections open, this one included, by closing the oldest
        ones with no request in flight; False when that is not enough."""
        open_ones = [c for c in self.connections if not c.transport.is_closing()]
        excess = len(open_ones) - max(most, 1)
        if excess <= 0:
            return True
        idle = sorted(
            (c for c in open_ones if c is not self and c._has_no_request()),
            key=lambda c: getattr(c, "_read_started", 0.0),
        )
        for connection in idle[:excess]:
            _logger.debug("At the connection limit: closing the oldest idle connection.")
            connection.transport.close()
        return len(idle) >= excess

    def _has_no_request(self) -> bool:
        return self.conn.their_state is h11.IDLE and (
            self.cycle is None or self.cycle.response_complete
        )

    def data_received(self, data: bytes) -> None:
        if self._read_timer is None and self.conn.their_state is h11.IDLE:
            self._read_started = time.monotonic()  # the next request on a kept-alive connection
            self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)
        self._received_any = True
        READ_STARTED.set(self._read_started)
        super().data_received(data)
        if self._read_timer is not None and self.conn.their_state is not h11.IDLE:
            self._read_timer.cancel()  # the head is in; the app keeps the body's deadline
            self._read_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        _logger.debug("A client did not send its request head within %g s.", self.read_timeout)
        if self._received_any:
            self.transport.write(self._timeout_answer)
        self.transport.close()
