"""Replies in request order, whatever order their ops finish in.

A connection answers its lines in order, but an op that runs off the loop
answers later. :class:`ReplyQueue` keeps each connection's order the way
HTTP/1.1 pipelining and Redis do: a request whose op runs elsewhere
reserves a :class:`Slot`; a reply made at once (a text echo, an inline op,
an error) goes straight out while nothing is owed before it, else it waits
behind the slots; the filled head of the queue is released as soon as it
is complete. Sans-IO: no sockets, no threads, no clock; the connection
sends what :meth:`ReplyQueue.release` returns.
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Any

__all__ = ["ReplyQueue", "Slot"]


class Slot:
    """The place of one request's reply while its op runs off the loop.

    ``data`` is None until the reply is known (the op's result, or an
    ``op_timeout`` error when it ran too long). ``future`` is the op's, to
    cancel; ``started`` is when it started (the server's clock), for the
    log and its deadline.
    """

    __slots__ = ("data", "future", "on_worker", "op", "request_id", "started")

    def __init__(self, op: str, request_id: Any, started: float, on_worker: bool) -> None:
        self.op = op
        self.request_id = request_id
        self.started = started
        #: True for a ``def`` op in the worker pool (its reply is claimed from the pool).
        self.on_worker = on_worker
        self.data: bytes | None = None
        self.future: concurrent.futures.Future[Any] | None = None


class ReplyQueue:
    """Replies owed by one connection that cannot be sent yet, in request order.

    ``in_flight``: slots whose reply is not known yet. ``waiting_bytes``:
    bytes of replies already made that wait behind an unfilled slot (they
    count against the connection's output cap and the server's budget).
    ``items``: what is owed, in order (read-only outside this class); empty
    when nothing is, and the queue is then False. The loop truth-tests
    ``items`` for every line: a deque's own test, with no Python call.
    """

    __slots__ = ("in_flight", "items", "waiting_bytes")

    def __init__(self) -> None:
        self.items: collections.deque[Slot | bytes] = collections.deque()
        self.in_flight = 0
        self.waiting_bytes = 0

    def __bool__(self) -> bool:
        return bool(self.items)

    def reserve(self, slot: Slot) -> None:
        """Keep the place of a reply that is not known yet."""
        self.items.append(slot)
        self.in_flight += 1

    def add(self, data: bytes) -> None:
        """A reply made now, behind the replies still owed (there is one)."""
        assert self.items, "nothing is owed: send the reply at once"
        self.items.append(data)
        self.waiting_bytes += len(data)

    def fill(self, slot: Slot, data: bytes) -> bool:
        """Give ``slot`` its reply; False if it had one already (a late result)."""
        if slot.data is not None:
            return False
        slot.data = data
        self.in_flight -= 1
        self.waiting_bytes += len(data)
        return True

    def release(self) -> list[bytes]:
        """Take the replies now complete at the head, in order."""
        items = self.items
        out: list[bytes] = []
        while items:
            head = items[0]
            if isinstance(head, Slot):
                data = head.data
                if data is None:
                    break
                # Let go of the bytes (a deadline entry may keep the slot a
                # while); not None, so a late result is still told apart.
                head.data = b""
                head.future = None
                head = data
            items.popleft()
            out.append(head)
            self.waiting_bytes -= len(head)
        return out

    def pending(self) -> list[Slot]:
        """The slots whose reply is not known yet, oldest first."""
        return [item for item in self.items if isinstance(item, Slot) and item.data is None]

    def clear(self) -> list[Slot]:
        """Forget everything owed (the connection closed); returns the unfilled slots."""
        slots = self.pending()
        self.items.clear()
        self.in_flight = 0
        self.waiting_bytes = 0
        return slots
