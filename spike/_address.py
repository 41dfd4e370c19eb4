"""Host and port rules that the server, the client and the command lines share.

A port is 0 to 65535; ``[::1]`` is the IPv6 address ``::1`` in the brackets
that ``HOST:PORT`` needs (:func:`spike.protocol.format_address` writes them);
``0.0.0.0`` and ``::`` are the wildcard addresses, which a server listens on
to be reached on every interface and which no client can connect to.
"""

from __future__ import annotations

import ipaddress

__all__ = ["check_port", "is_wildcard", "unbracket"]


def check_port(port: object) -> int:
    """``port`` if it is a TCP port number (0 means "pick a free one"); else ValueError."""
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
    return port


def unbracket(host: str) -> str:
    """``[::1]`` -> ``::1``: the brackets of ``[::1]:3000`` are not part of the host."""
    if len(host) > 2 and host[0] == "[" and host[-1] == "]":
        return host[1:-1]
    return host


def is_wildcard(host: str) -> bool:
    """True for ``0.0.0.0``, ``::`` (with or without brackets) and their other spellings."""
    try:
        return ipaddress.ip_address(unbracket(host)).is_unspecified
    except ValueError:  # a name, not an address
        return False
