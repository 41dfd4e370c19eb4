"""The server's sockets and the operating system: listening on a host and
port, and asking how many reply bytes the kernel still holds for a peer."""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Any

from ..errors import AddressInUseError, BindError

__all__ = ["listen", "preferred_address", "queued_for_peer"]


if sys.platform.startswith("linux"):
    import fcntl
    import termios

    def queued_for_peer(sock: socket.socket) -> int:
        """Bytes the kernel holds for the peer: not yet sent, or not yet
        acknowledged (SIOCOUTQ, which equals TIOCOUTQ). 0 if unknown."""
        try:
            return int.from_bytes(
                fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, bytes(4)), sys.byteorder
            )
        except (OSError, ValueError):
            return 0

elif sys.platform == "darwin":
    _SO_NWRITE = 0x1024  # from <sys/socket.h>; the socket module does not name it

    def queued_for_peer(sock: socket.socket) -> int:
        """Bytes in the socket's send buffer not yet acknowledged by the peer. 0 if unknown."""
        try:
            return sock.getsockopt(socket.SOL_SOCKET, _SO_NWRITE)
        except (OSError, ValueError):
            return 0

else:

    def queued_for_peer(sock: socket.socket) -> int:
        """Windows and others offer no portable way to ask: 0 (unknown)."""
        return 0


def input_waiting(sock: socket.socket) -> bool:
    """True if the peer's bytes (or its end of stream) wait unread in the
    socket; reads nothing. A timer that is due asks this first: after a
    stall, what has arrived must decide, not the stale deadline."""
    try:
        sock.recv(1, socket.MSG_PEEK)
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:  # reset or closed: the next read finds out
        return True
    return True  # a byte, or b"" for end of stream


def preferred_address(
    infos: list[tuple[Any, ...]],
) -> tuple[int, tuple[Any, ...]]:
    """The ``(family, sockaddr)`` to listen on from getaddrinfo() results.

    ``localhost`` resolves to ``::1`` first on Windows and macOS, but the
    clients students write (Java's ``new Socket("localhost", port)``, Python
    sockets made with ``AF_INET``) try only 127.0.0.1; a server on ``::1``
    alone would refuse them. So IPv4 wins when a name has both.
    """
    for family, _, _, _, sockaddr in infos:
        if family == socket.AF_INET:
            return family, sockaddr
    return infos[0][0], infos[0][4]


def listen(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening socket, or BindError naming host:port."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {where}: unknown host ({exc.strerror})") from None
    family, sockaddr = preferred_address(infos)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if os.name == "nt":
            # Windows' SO_REUSEADDR would let a second server share the
            # port; exclusive use makes "port in use" an error as it should be.
            if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        else:
            # Lets a restarted server bind while old connections linger in
            # TIME_WAIT; on POSIX it never allows two live listeners.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1)):
            raise AddressInUseError(
                f"cannot listen on {where}: address already in use "
                "(is another server running? try another --port)"
            ) from None
        raise BindError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock
