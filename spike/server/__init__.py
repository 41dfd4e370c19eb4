"""The pipe's server: one event loop for every client's sockets, ops off it.

:class:`Server` (``_loop.py``) owns the listening socket, the poller, the
turn queue and the timers; each accepted socket gets a :class:`Connection`
(``_connection.py``) that holds that client's state (its line framer,
unsent reply bytes, message count, replies owed in request order,
``_replies.py``). Ops that may wait run off the loop (``_dispatch.py``: a
pool of worker threads for ``def`` ops, one asyncio loop for ``async def``
ops) and their replies come back through one thread-safe inbox
(:meth:`Server.post`). The pollers (``_poller.py``) share one
:class:`~spike.server._poller.Poller` protocol, and ``_net.py`` holds what
asks the operating system (listening, unsent bytes). Every wait is
bounded, so Ctrl+C and :meth:`Server.shutdown` take effect promptly on
every platform, and no client can block another: sockets are non-blocking
and a client that stops reading its replies only stops its own connection
from being read.

Run it from a terminal with ``spike-server`` (or ``python -m spike.server``);
use it from Python with :func:`running_server`.
"""

from __future__ import annotations

from ..errors import AddressInUseError, BindError
from ._connection import Connection
from ._loop import (
    DEFAULT_AUTH_TIMEOUT,
    DEFAULT_BACKLOG,
    DEFAULT_FLUSH_AFTER,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_OP_TIMEOUT,
    DEFAULT_WORKERS,
    Log,
    Server,
    running_server,
)

__all__ = [
    "DEFAULT_AUTH_TIMEOUT",
    "DEFAULT_BACKLOG",
    "DEFAULT_FLUSH_AFTER",
    "DEFAULT_MAX_BUFFERED_BYTES",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_OP_TIMEOUT",
    "DEFAULT_WORKERS",
    "AddressInUseError",
    "BindError",
    "Connection",
    "Log",
    "Server",
    "running_server",
]
