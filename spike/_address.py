"""Host and port rules that the server, the client and the command lines share.

A port is 0 to 65535; ``[::1]`` is the IPv6 address ``::1`` in the brackets
that ``HOST:PORT`` needs (:func:`spike.protocol.format_address` writes them);
``0.0.0.0`` and ``::`` are the wildcard addresses, which a server listens on
to be reached on every interface and which no client can connect to.
A loopback address (``127.0.0.1``, ``::1``, or a name such as ``localhost``
that resolves only to them) is reached from this computer alone.
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["check_port", "is_loopback", "is_wildcard", "unbracket"]


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


def is_loopback(host: str) -> bool:
    """True if a server listening on ``host`` is reached from this computer
    only: a loopback address, or a name whose every address is one. False
    for a wildcard, any other address, and a name that does not resolve."""
    text = unbracket(host).partition("%")[0]  # an IPv6 zone ("%eth0") is not the address
    try:
        address = ipaddress.ip_address(text)
    except ValueError:  # a name: what it resolves to decides
        try:
            infos = socket.getaddrinfo(text, None, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            return False
        return bool(infos) and all(is_loopback(str(info[4][0])) for info in infos)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1
    return address.is_loopback
