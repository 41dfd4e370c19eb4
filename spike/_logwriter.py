"""The server's log: one interface (:class:`EventLog`) and a sink that keeps
every line an output takes, without letting a stalled output hold the loop.

What a client sent is made safe for a log line by :mod:`spike._display`.

The server logs a line per message. Written one ``print(..., flush=True)``
at a time, that is a system call per line made while every client waits,
and a stdout that nobody reads (``spike-server | sleep 600``, a terminal
scrolled back and paused) blocks the whole server once the pipe is full.

:class:`LogWriter` takes lines from the loop into a bounded queue in memory
(an append, no system call) and a thread of its own writes them out, at
most every ``interval`` seconds, or at once when a lot is waiting. A file
or a pipe that is read gets every line: when the bound is reached, the
loop waits for the writer as ``print`` would. Only an output that has
taken nothing for ``stall`` seconds loses lines: the loop keeps serving,
and once the output moves again one line says how many were lost, where.

Why a thread rather than non-blocking writes from the loop: on POSIX a
pipe or terminal can be made non-blocking, but on Windows a console cannot
be, and pipes only with Python 3.12's ``os.set_blocking``; a thread that
may block is the one design that behaves the same on every platform and
every kind of output. It writes to the stream's raw file (below Python's
buffered layer), so an abandoned write blocked at exit holds no lock that
interpreter shutdown would wait for.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TextIO

from ._display import DISPLAY_CHARS, display_line, display_text, plural

__all__ = [
    "DISPLAY_CHARS",
    "CallableLog",
    "EventLog",
    "LogWriter",
    "display_line",
    "display_text",
    "dropped_line",
]

# For checking a batch of lines in two passes: every byte that must not be
# shown as it is (controls, DEL, non-ASCII) becomes 0, every other byte "x",
# and the "\n" that joins the lines stays.
_CLASSES = bytes(10 if c == 0x0A else 0 if c < 0x20 or c >= 0x7F else ord("x") for c in range(256))
_TOO_LONG = b"x" * (DISPLAY_CHARS + 1)


def _shown_as_is(joined: bytes) -> bool:
    """True if every line of a batch is short, printable ASCII: shown as it is.

    What a pipelining client sends; checked with a few calls over the whole
    batch, so that it can be formatted the same way.
    """
    classes = joined.translate(_CLASSES)
    return b"\0" not in classes and (len(joined) <= DISPLAY_CHARS or _TOO_LONG not in classes)


class EventLog(Protocol):
    """The server's one log interface: a line of text, or raw client lines
    to show after a prefix (made safe with :func:`display_line`).

    :class:`LogWriter` is one; :class:`CallableLog` makes one of any
    ``print``-like callable. None of the three methods may block or raise.
    """

    def __call__(self, line: str) -> None:
        """Log one line of text (no newline)."""
        ...

    def line(self, prefix: str, raw: bytes) -> None:
        """Log ``prefix + display_line(raw)``."""
        ...

    def lines(self, prefix: str, lines: Sequence[bytes], joined: bytes | None = None) -> None:
        """Log ``prefix + display_line(line)`` for each line (``joined``:
        ``b"\\n".join(lines)``, when the caller has it)."""
        ...


class CallableLog:
    """An :class:`EventLog` around a callable that takes one line of text
    (``print``, a list's ``append``); a failing callable is ignored, so a
    closed output can never stop the server."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self._write = write

    def __call__(self, line: str) -> None:
        try:
            self._write(line)
        except Exception:  # the log must never take the server down with it
            return

    def line(self, prefix: str, raw: bytes) -> None:
        self(prefix + display_line(raw))

    def lines(self, prefix: str, lines: Sequence[bytes], joined: bytes | None = None) -> None:
        for raw in lines:
            self(prefix + display_line(raw))


# What the queue holds: a line; a drop report (how many lines were lost
# there); raw lines to show with a prefix: (prefix, the lines joined by
# "\n", the lines or None for a single one, its size as counted below, or
# 0 for a short line queued uncounted: see LogWriter.line).
_Item = str | int | tuple[str, bytes, Sequence[bytes] | None, int]

DEFAULT_INTERVAL = 0.05
# What may wait in memory, in bytes (text and, below, what Python holds
# for it). A file or a pipe that is read
# never fills it: past it the loop waits for the writer (as print() would)
# while the output keeps taking data, and lines are dropped only once the
# output has taken nothing for DEFAULT_STALL seconds.
DEFAULT_MAX_PENDING = 32 << 20
# Write at once, without waiting out the interval, when this much waits.
DEFAULT_LARGE = 256 << 10
# What waits is counted as its characters plus what Python holds for it,
# so that the bound bounds memory, not only text: counted as characters
# alone, a flood of 2-byte messages held eight times the bound. A queued
# item: its tuple and the header of its str or bytes object.
_ITEM_COST = 100
# Each line of a batch besides: its own bytes object and its list slot.
_LINE_COST = 41
# One write call at most this big, so that close() can see progress.
_CHUNK = 64 << 10
# An output that takes nothing for this long has stalled: lines that find no
# room are dropped, and close() gives up on it.
DEFAULT_STALL = 0.4
# An output made non-blocking by someone else (a shared pipe): retry after this.
_RETRY = 0.01


STALLED = "the log output took nothing for a while"
FAILED = "the log output failed"


def dropped_line(count: int, reason: str = STALLED) -> str:
    """The one line that reports lost log lines, and why (:data:`STALLED`
    or :data:`FAILED`)."""
    return f"{plural(count, 'log line')} dropped: {reason}"


class LogWriter:
    """A callable log sink (``writer(line)``) that writes on a thread of its own.

    ``stream``: a text stream such as ``sys.stdout``. Calling the writer never
    raises, and waits only while ``max_pending`` bytes wait and the
    output is still taking them; an output that took nothing for ``stall``
    seconds has stalled, and lines that find no room are dropped (and
    reported in their place once it moves again). ``close(stall)`` writes
    what is left and stops the thread. ``dropped`` counts the lines lost so
    far, ``drop_reason`` says why (:data:`STALLED` or :data:`FAILED`).
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
        large: int = DEFAULT_LARGE,
        stall: float = DEFAULT_STALL,
        name: str = "spike-log",
    ) -> None:
        self._stream = stream
        buffer = getattr(stream, "buffer", None)
        self._raw: Any = getattr(buffer, "raw", None)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        # sys.stdout turns "\n" into os.linesep; writing below it, so must we.
        self._linesep = "\n" if self._raw is None else os.linesep
        try:
            self._ascii_ok = "a\n".encode(self._encoding) == b"a\n"
        except LookupError:
            self._ascii_ok = False
        self._interval = interval
        # The bound on what waits, in bytes (characters and _ITEM_COST). Past
        # large bytes, or calm_items items, the writer is hurried.
        self._max_pending = max_pending
        self._large = large
        self._stall = stall
        self._calm_items = max(1, large // (DISPLAY_CHARS + 56 + _ITEM_COST))
        # Lines (str), raw lines to show with a prefix, and drop reports
        # (int: how many lines were lost at that point). The loop appends,
        # the writer thread pops: both are single, atomic deque operations,
        # so no lock is needed.
        self._queue: collections.deque[_Item] = collections.deque()
        # Counters each written by one thread only, so no update is lost.
        self._added = 0  # bytes queued (loop)
        self._taken = 0  # bytes taken off the queue (writer)
        self._dropping = 0  # lines dropped since the last one queued (loop)
        self.dropped = 0  # lines lost in all (loop)
        self.drop_reason = STALLED
        # What is being written, how much of it went out, and how many lines
        # it holds: what an output that stalls halfway has lost.
        self._inflight: tuple[bytes, int, int] | None = None  # (writer)
        self._progress = 0  # chunks written (writer)
        self._stalled_at: int | None = None  # progress count when found stalled (loop)
        self._broken = False  # the output failed for good (writer)
        self._room = threading.Event()  # the writer took something off the queue
        self._closing = False
        self._wake = threading.Event()  # something waits to be written
        self._hurry = threading.Event()  # much waits, or closing: do not wait out the interval
        # Whether the events above are set, as plain flags the loop can test
        # for nothing (set by the loop, cleared by the writer before the
        # events, so a line queued in between still wakes the writer).
        self._woken = False
        self._hurried = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        """Queue one line (no newline)."""
        self._put(line, len(line) + 1 + _ITEM_COST, 1)

    def line(self, prefix: str, raw: bytes) -> None:
        """Queue ``prefix + display_line(raw)``: a line as a client sent it,
        made safe and formatted on the writer thread."""
        # The loop's call for every message: as little as possible on the
        # common path (a short line, the queue far from full). Such a line
        # is not counted against the bound: fewer than calm_items of them,
        # each at most DISPLAY_CHARS, wait at once, so they hold at most
        # `large` bytes beyond it (counting them cost 60 ns a message).
        queue = self._queue
        if (
            len(queue) < self._calm_items
            and len(raw) <= DISPLAY_CHARS
            and raw.find(b"\n") < 0  # not `in`: see _connection._is_plain_ascii
            and not self._dropping
        ):
            queue.append((prefix, raw, None, 0))
            if not self._woken:
                self._woken = True
                self._wake.set()
            return
        size = len(prefix) + len(raw) + 1 + _ITEM_COST
        if len(raw) > DISPLAY_CHARS or b"\n" in raw:
            # Shown shortened (holding a big message here would cost its
            # size in memory), or it would read as two lines as it is.
            self(prefix + display_line(raw))
        else:
            self._put((prefix, raw, None, size), size, 1)

    def lines(self, prefix: str, lines: Sequence[bytes], joined: bytes | None = None) -> None:
        """Queue ``prefix + display_line(line)`` for each raw line, as one item.

        The same as calling :meth:`line` for each, with less work: the
        server's loop hands over a pipelined burst of messages in one call.
        No line may hold a ``"\\n"`` (a framer's lines never do); ``joined``
        is ``b"\\n".join(lines)``, when the caller has it already.
        """
        if not lines:
            return
        if joined is None:
            joined = b"\n".join(lines)
        if len(joined) > _CHUNK:
            # A long line among them (the framer's windows are far smaller):
            # one at a time, so that it is shortened now, not held whole.
            for line in lines:
                self.line(prefix, line)
            return
        # Output characters; then held memory: the lines' own copies of the text.
        size = 2 * len(joined) + len(lines) * (len(prefix) + _LINE_COST) + 1 + _ITEM_COST
        self._put((prefix, joined, lines, size), size, len(lines))

    def _put(self, item: _Item, size: int, count: int) -> None:
        """Queue ``item`` (``count`` lines, ``size`` bytes); over the bound,
        wait for room while the output takes data, else drop it and count it."""
        queue = self._queue
        pending = self._added - self._taken + size
        if self._broken or (pending > self._max_pending and not self._make_room(size)):
            self._dropping += count
            self.dropped += count
            self.drop_reason = FAILED if self._broken else STALLED
            return
        if self._dropping:
            queue.append(self._dropping)
            self._dropping = 0
        queue.append(item)
        self._added += size
        if not self._woken:
            self._woken = True
            self._wake.set()
        if (pending > self._large or len(queue) >= self._calm_items) and not self._hurried:
            self._hurried = True
            self._hurry.set()

    def _make_room(self, size: int) -> bool:
        """Wait while the output keeps taking data, until ``size`` more
        bytes fit; False (at once, or after ``stall`` seconds without
        progress) if the output has stalled."""
        if self._stalled_at is not None:
            if self._progress == self._stalled_at:
                return False  # still stalled: no waiting again for every line
            self._stalled_at = None
        self._rush()
        while self._added - self._taken + size > self._max_pending:
            if self._broken:
                return False
            progress = self._progress
            self._room.clear()  # then look again: a wake-up in between is not lost
            if self._added - self._taken + size <= self._max_pending:
                break
            if not self._room.wait(self._stall) and self._progress == progress:
                self._stalled_at = progress
                return False
        return True

    def _rush(self) -> None:
        """Wake the writer and have it write now, not after its interval."""
        self._hurried = self._woken = True
        self._hurry.set()
        self._wake.set()

    def close(self, stall: float = DEFAULT_STALL) -> bool:
        """Write everything queued and stop the thread; True if all of it went out
        (lost lines included: their report went out in their place).

        Waits as long as the output keeps taking data, but no more than
        ``stall`` seconds without progress: an output nobody reads must not
        keep the program from exiting.
        """
        if self._dropping:
            # Lines were lost at the very end: say so, even if this line
            # itself has to wait for room it will never get.
            self._queue.append(self._dropping)
            self._dropping = 0
        self._closing = True
        self._rush()
        while self._thread.is_alive():
            progress = self._progress
            self._thread.join(stall)
            if self._progress == progress:
                break
        if self._thread.is_alive() or self._broken:
            # Given up on: what never went out is lost too.
            self.dropped += self._unwritten()
            self.drop_reason = FAILED if self._broken else STALLED
            return False
        return True

    def _unwritten(self) -> int:
        """Lines still queued, or written only in part, once the writer is given up on."""
        try:
            queued = list(self._queue)
        except RuntimeError:  # the writer woke up after all and took some
            queued = []
        lost = sum(_lines_in(item) for item in queued)
        inflight = self._inflight
        if inflight is not None:
            data, done, lines = inflight
            lost += max(0, lines - data.count(b"\n", 0, done))
        return lost

    # -- the writer thread -------------------------------------------------
    def _run(self) -> None:
        last = -self._interval
        while True:
            self._wake.wait()
            delay = last + self._interval - time.monotonic()
            if delay > 0 and not self._closing:
                self._hurry.wait(delay)
            # Clear before taking: a line queued after this is either taken
            # now or sets the event again, never left waiting unseen.
            self._woken = self._hurried = False
            self._wake.clear()
            self._hurry.clear()
            while self._queue:
                self._write(*self._take())
            last = time.monotonic()
            if self._closing and not self._queue:
                return

    def _take(self) -> tuple[bytes, int]:
        """Up to about one chunk of queued lines, encoded, drop reports in
        place; and how many lines (reports included) that is."""
        out: list[bytes] = []
        texts: list[str] = []
        size = 0  # as counted against the bound (bytes held)
        chars = 0  # what will be written: a chunk is cut by this
        count = 0
        queue = self._queue
        while queue and chars < _CHUNK:
            item = queue.popleft()
            if isinstance(item, str):
                texts.append(item)
                size += len(item) + 1 + _ITEM_COST
                chars += len(item) + 1
                count += 1
                continue
            if isinstance(item, int):
                texts.append(dropped_line(item))
                count += 1
                continue
            # Raw lines (a batch, or one), merged with the raw lines queued
            # right after them: checked and formatted a whole run at once.
            prefix, joined, lines, counted = item
            per_line = len(prefix) + 1
            size += counted
            chars += len(joined) + per_line * (1 if lines is None else len(lines))
            joins = [joined]
            batches = [(joined,) if lines is None else lines]
            while queue and chars < _CHUNK:
                following = queue[0]
                if not isinstance(following, tuple) or following[0] != prefix:
                    break
                queue.popleft()
                joins.append(following[1])
                more = following[2]
                batches.append((following[1],) if more is None else more)
                size += following[3]
                chars += len(following[1]) + per_line * (1 if more is None else len(more))
            if len(joins) > 1:
                joined = b"\n".join(joins)
            count += sum(map(len, batches))
            if self._ascii_ok and _shown_as_is(joined):
                if texts:
                    out.append(self._encode(texts))
                    texts = []
                sep = self._linesep.encode()
                head = sep + prefix.encode()
                out += (head[len(sep) :], joined.replace(b"\n", head), sep)
            else:
                texts.extend([prefix + display_line(line) for part in batches for line in part])
        if texts:
            out.append(self._encode(texts))
        self._taken += size
        self._room.set()
        return b"".join(out), count

    def _encode(self, texts: list[str]) -> bytes:
        sep = self._linesep
        return (sep.join(texts) + sep).encode(self._encoding, "backslashreplace")

    def _write(self, encoded: bytes, lines: int) -> None:
        """Write it all, ``lines`` lines; give up on an output that fails for good."""
        if self._broken:
            return
        self._inflight = (encoded, 0, lines)
        try:
            if self._raw is None:  # a stream without a file below it (a test's StringIO)
                self._stream.write(encoded.decode(self._encoding))
                self._stream.flush()
            else:
                view = memoryview(encoded)
                done = 0
                while done < len(encoded):
                    written = self._raw.write(view[done : done + _CHUNK])
                    if written is None:  # non-blocking output, full for now
                        time.sleep(_RETRY)
                        continue
                    done += written
                    self._inflight = (encoded, done, lines)
                    self._progress += 1
                    self._room.set()
        except Exception:
            # Closed or broken for good (EPIPE, a closed file, no stdout at
            # all): stop trying; the server goes on without its log, and
            # every line from now on is counted as lost (none takes line()'s
            # quick way past the count).
            self._calm_items = 0
            self._broken = True
            self._room.set()  # a loop waiting for room must see it at once
            return
        self._inflight = None
        self._progress += 1


def _lines_in(item: _Item) -> int:
    """How many log lines a queued item stands for (a drop report: none of its own)."""
    if isinstance(item, str):
        return 1
    if isinstance(item, int):
        return 0
    return 1 if item[2] is None else len(item[2])
