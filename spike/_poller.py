"""Readiness polling for the server loop: raw epoll on Linux, selectors elsewhere.

``selectors`` wraps every ready socket in Python objects; on the pipe's hot
path (one message, one reply) that wrapping was a measurable share of a
round trip, so on Linux the loop talks to ``select.epoll`` directly. Both
pollers share one small interface: ``register``/``modify``/``unregister`` a
socket with an owner object, and ``poll(timeout)`` returning
``(fd, events)`` pairs; ``owners[fd]`` is the object registered for ``fd``;
``max_sockets`` is how many connections the poller can watch (None: no
limit of its own).
"""

from __future__ import annotations

import select
import selectors
import socket
import sys
from typing import Any

# Interest bits for register()/modify(); with epoll they are the kernel's.
READ = 1
WRITE = 4
# Bits of a poll() result meaning "try recv()" and "try send()". An error or
# hang-up counts as both, so the owner's recv() or send() meets the error.
READY_READ = READ
READY_WRITE = WRITE


class SelectorPoller:
    """Portable poller on top of :mod:`selectors` (Windows, macOS, BSD)."""

    def __init__(self, selector_class: type[selectors.BaseSelector] = selectors.DefaultSelector) -> None:
        self._selector = selector_class()
        self.owners: dict[int, Any] = {}
        # Windows' select() takes at most 512 sockets (its FD_SETSIZE); keep
        # room for the listener and the wake-up socket.
        if sys.platform == "win32" and isinstance(self._selector, selectors.SelectSelector):
            self.max_sockets: int | None = 500
        else:
            self.max_sockets = None

    @staticmethod
    def _mask(events: int) -> int:
        return (selectors.EVENT_READ if events & READ else 0) | (
            selectors.EVENT_WRITE if events & WRITE else 0
        )

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        self._selector.register(sock, self._mask(events))
        self.owners[sock.fileno()] = owner

    def modify(self, sock: socket.socket, events: int) -> None:
        self._selector.modify(sock, self._mask(events))

    def unregister(self, sock: socket.socket) -> None:
        key = self._selector.unregister(sock)
        self.owners.pop(key.fd, None)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        ready = []
        for key, mask in self._selector.select(timeout):
            events = (READ if mask & selectors.EVENT_READ else 0) | (
                WRITE if mask & selectors.EVENT_WRITE else 0
            )
            ready.append((key.fd, events))
        return ready

    def close(self) -> None:
        self._selector.close()
        self.owners.clear()


if hasattr(select, "epoll"):
    _ERRORS = select.EPOLLERR | select.EPOLLHUP
    assert select.EPOLLIN == READ and select.EPOLLOUT == WRITE

    class EpollPoller:
        """Linux poller: ``select.epoll`` without per-event Python objects."""

        def __init__(self) -> None:
            self._epoll = select.epoll()
            self.owners: dict[int, Any] = {}
            self.max_sockets: int | None = None  # no limit of its own
            # The bound C method itself: no Python frame per loop pass.
            self.poll = self._epoll.poll

        def register(self, sock: socket.socket, events: int, owner: Any) -> None:
            fd = sock.fileno()
            self._epoll.register(fd, events)
            self.owners[fd] = owner

        def modify(self, sock: socket.socket, events: int) -> None:
            self._epoll.modify(sock.fileno(), events)

        def unregister(self, sock: socket.socket) -> None:
            fd = sock.fileno()
            self._epoll.unregister(fd)
            del self.owners[fd]

        def close(self) -> None:
            self._epoll.close()
            self.owners.clear()

    Poller: Any = EpollPoller
    READY_READ = READ | _ERRORS
    READY_WRITE = WRITE | _ERRORS
else:  # pragma: no cover - exercised on Windows/macOS
    Poller = SelectorPoller
