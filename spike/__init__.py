"""CS361 pipe spike: a newline-delimited TCP request/response pipe.

Public API::

    from spike import Server, Client, PipeError, running_server, OpRegistry, default_ops

An op refuses its input with ``raise BadRequest("...")`` (see :mod:`spike.ops`).

The wire protocol is described in :mod:`spike.protocol`; the command-line
tools are ``spike-server``, ``spike-client`` and ``python -m spike`` (a demo).
"""

from __future__ import annotations

from ._version import __version__
from .client import Client
from .errors import (
    AddressInUseError,
    BindError,
    ConnectError,
    ConnectionClosed,
    PipeError,
    PipeTimeout,
    ProtocolError,
    RemoteError,
    Unauthorized,
)
from .ops import BadRequest, OpRegistry, default_ops
from .server import Connection, Server, running_server

# (spike.server and spike.client are packages whose __main__ runs the CLI,
# so importing them here does not make `python -m spike.server` warn.)
__all__ = [
    "AddressInUseError",
    "BadRequest",
    "BindError",
    "Client",
    "ConnectError",
    "Connection",
    "ConnectionClosed",
    "OpRegistry",
    "PipeError",
    "PipeTimeout",
    "ProtocolError",
    "RemoteError",
    "Server",
    "Unauthorized",
    "__version__",
    "default_ops",
    "running_server",
]
