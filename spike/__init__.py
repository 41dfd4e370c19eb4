"""CS361 pipe spike: a newline-delimited TCP request/response pipe.

Public API::

    from spike import Server, Client, PipeError, running_server, OpRegistry, default_ops

The wire protocol is described in :mod:`spike.protocol`; the command-line
tools are ``spike-server``, ``spike-client`` and ``python -m spike`` (a demo).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "AddressInUseError",
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
    "__version__",
    "default_ops",
    "running_server",
]

# Names are imported on first use: importing the server module here would
# make `python -m spike.server` warn that the module was already imported.
_HOMES = {
    "AddressInUseError": "server",
    "BindError": "server",
    "Connection": "server",
    "Server": "server",
    "running_server": "server",
    "Client": "client",
    "ConnectError": "client",
    "ConnectionClosed": "client",
    "PipeTimeout": "client",
    "OpRegistry": "ops",
    "default_ops": "ops",
    "PipeError": "protocol",
    "ProtocolError": "protocol",
    "RemoteError": "protocol",
}

if TYPE_CHECKING:
    from .client import Client, ConnectError, ConnectionClosed, PipeTimeout
    from .ops import OpRegistry, default_ops
    from .protocol import PipeError, ProtocolError, RemoteError
    from .server import AddressInUseError, BindError, Connection, Server, running_server


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'spike' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
