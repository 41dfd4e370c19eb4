"""The pipe's client: :class:`Client`, a small blocking library on top of
:mod:`spike.protocol` (the code is in ``_client.py``).

::

    from spike import Client

    with Client("127.0.0.1", 3000) as client:
        print(client.send_text("A message from CS361"))  # plain-text echo
        print(client.request("info"))                     # a JSON op

From a terminal use ``spike-client`` (or ``python -m spike.client``).
"""

from __future__ import annotations

from ..errors import ConnectError, ConnectionClosed, PipeTimeout, Unauthorized
from ._client import (
    DEFAULT_MAX_REPLY_BYTES,
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    Client,
    check_reply,
    request_id_of,
)

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "Client",
    "ConnectError",
    "ConnectionClosed",
    "PipeTimeout",
    "Unauthorized",
    "check_reply",
    "request_id_of",
]
