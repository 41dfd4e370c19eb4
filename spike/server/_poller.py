"""Readiness polling for the server loop: epoll on Linux, select() in groups on
Windows, selectors elsewhere.

``selectors`` wraps every ready socket in Python objects; on the pipe's hot
path (one message, one reply) that wrapping was a measurable share of a
round trip, so on Linux the loop talks to ``select.epoll`` directly. On
Windows the standard library offers only ``select()``, which takes at most
512 sockets per call there, so :class:`GroupedSelectPoller` watches larger
numbers in groups. Every poller has one small interface, the
:class:`Poller` protocol (modelled on :class:`selectors.BaseSelector`):
``register``/``modify``/``unregister`` a socket with an owner object, and
``poll(timeout)`` returning ``(fd, events)`` pairs; ``owners[fd]`` is the
object registered for ``fd``. Interest ``0`` is allowed: the socket stays
registered but is not watched (the server stops reading a client whose
input waits for a turn). :data:`DefaultPoller` makes this platform's.
"""

from __future__ import annotations

import select
import selectors
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

# Interest bits for register()/modify(); with epoll they are the kernel's.
READ = 1
WRITE = 4
# Bits of a poll() result meaning "try recv()" and "try send()". An error or
# hang-up counts as both, so the owner's recv() or send() meets the error.
READY_READ = READ
READY_WRITE = WRITE


class Poller(Protocol):
    """What the server loop needs of a poller (a slimmer ``selectors.BaseSelector``)."""

    #: The object registered for each watched file descriptor.
    owners: dict[int, Any]

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        """Watch ``sock`` for ``events`` (READ, WRITE, both, or 0: not now) for ``owner``."""

    def modify(self, sock: socket.socket, events: int) -> None:
        """Watch a registered ``sock`` for other ``events``."""

    def unregister(self, sock: socket.socket) -> None:
        """Stop watching ``sock`` and forget its owner."""

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        """Wait up to ``timeout`` seconds; the ``(fd, events)`` that are ready."""

    def close(self) -> None:
        """Release the poller's resources."""


class SelectorPoller:
    """Portable poller on top of :mod:`selectors` (kqueue on macOS and BSD)."""

    def __init__(
        self, selector_class: type[selectors.BaseSelector] = selectors.DefaultSelector
    ) -> None:
        self._selector = selector_class()
        self.owners: dict[int, Any] = {}
        # Registered with interest 0, which selectors refuses: kept out of
        # the selector until there is something to watch again.
        self._parked: set[int] = set()

    @staticmethod
    def _mask(events: int) -> int:
        return (selectors.EVENT_READ if events & READ else 0) | (
            selectors.EVENT_WRITE if events & WRITE else 0
        )

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        if fd in self.owners:
            raise KeyError(f"{sock!r} is already registered")
        if events:
            self._selector.register(sock, self._mask(events))
        else:
            self._parked.add(fd)
        self.owners[fd] = owner

    def modify(self, sock: socket.socket, events: int) -> None:
        fd = sock.fileno()
        if fd not in self.owners:
            raise KeyError(f"{sock!r} is not registered")
        if fd in self._parked:
            if events:
                self._selector.register(sock, self._mask(events))
                self._parked.discard(fd)
        elif events:
            self._selector.modify(sock, self._mask(events))
        else:
            self._selector.unregister(sock)
            self._parked.add(fd)

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd in self._parked:
            self._parked.discard(fd)
        else:
            fd = self._selector.unregister(sock).fd
        del self.owners[fd]

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
        self._parked.clear()


# Windows' select() refuses more than 512 sockets per list (CPython builds
# it with FD_SETSIZE 512); a group stays below that.
_GROUP_SIZE = 500
# With several groups no single select() call can wait for all of them, so
# the poller looks at every group, then waits this long on one, and repeats.
_GROUP_WAIT = 0.005


class GroupedSelectPoller:
    """Windows poller: ``select()`` on groups of at most 500 sockets.

    Up to one group (the usual case) it is a plain ``select()`` that waits
    the whole timeout. Beyond that an idle server wakes every few
    milliseconds to look at each group, which costs a little CPU but lets
    one server hold thousands of clients.
    """

    def __init__(self, group_size: int = _GROUP_SIZE) -> None:
        self.owners: dict[int, Any] = {}
        self._group_size = group_size
        self._interest: dict[int, tuple[socket.socket, int]] = {}
        self._groups: list[list[tuple[socket.socket, int]]] | None = None

    def register(self, sock: socket.socket, events: int, owner: Any) -> None:
        fd = sock.fileno()
        if fd in self._interest:
            raise KeyError(f"{sock!r} is already registered")
        self._interest[fd] = (sock, events)
        self.owners[fd] = owner
        self._groups = None

    def modify(self, sock: socket.socket, events: int) -> None:
        fd = sock.fileno()
        self._interest[fd] = (self._interest[fd][0], events)
        self._groups = None

    def unregister(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        del self._interest[fd]
        self.owners.pop(fd, None)
        self._groups = None

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        if self._groups is None:  # rebuilt only after a change
            entries = list(self._interest.values())
            size = self._group_size
            self._groups = [entries[i : i + size] for i in range(0, len(entries), size)]
        groups = self._groups
        if len(groups) <= 1:
            return self._select(groups[0] if groups else [], timeout)
        deadline = time.monotonic() + timeout
        while True:
            ready = [pair for group in groups for pair in self._select(group, 0)]
            remaining = deadline - time.monotonic()
            if ready or remaining <= 0:
                return ready
            ready = self._select(groups[0], min(_GROUP_WAIT, remaining))
            if ready:
                return ready

    @staticmethod
    def _select(group: list[tuple[socket.socket, int]], timeout: float) -> list[tuple[int, int]]:
        readers = [sock for sock, events in group if events & READ]
        writers = [sock for sock, events in group if events & WRITE]
        if not readers and not writers:
            # Windows' select() rejects three empty lists.
            time.sleep(timeout)
            return []
        can_read, can_write, _ = select.select(readers, writers, [], timeout)
        if not can_write:
            return [(sock.fileno(), READ) for sock in can_read]
        events: dict[int, int] = {}
        for sock in can_read:
            events[sock.fileno()] = READ
        for sock in can_write:
            fd = sock.fileno()
            events[fd] = events.get(fd, 0) | WRITE
        return list(events.items())

    def close(self) -> None:
        self._interest.clear()
        self.owners.clear()
        self._groups = None


# sys.platform, not hasattr(select, "epoll"): mypy follows only the former,
# so `--platform win32` / `darwin` check the branch those systems really take.
if sys.platform == "linux":
    _ERRORS = select.EPOLLERR | select.EPOLLHUP
    assert select.EPOLLIN == READ and select.EPOLLOUT == WRITE

    class EpollPoller:
        """Linux poller: ``select.epoll`` without per-event Python objects."""

        def __init__(self) -> None:
            self._epoll = select.epoll()
            self.owners: dict[int, Any] = {}
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

    DefaultPoller: Callable[[], Poller] = EpollPoller
    READY_READ = READ | _ERRORS
    READY_WRITE = WRITE | _ERRORS
elif sys.platform == "win32":  # pragma: no cover - exercised on Windows
    DefaultPoller = GroupedSelectPoller
else:  # pragma: no cover - exercised on macOS and BSD
    DefaultPoller = SelectorPoller
