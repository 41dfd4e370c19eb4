"""A log sink that never blocks the server's loop: a writer thread and a bounded buffer.

The server logs a line per message. Written one ``print(..., flush=True)``
at a time, that is a system call per line made while every client waits,
and a stdout that nobody reads (``spike-server | sleep 600``, a terminal
scrolled back and paused) blocks the whole server once the pipe is full.

:class:`LogWriter` takes lines from the loop into a bounded queue in memory
(an append, no system call) and a thread of its own writes them out, at
most every ``interval`` seconds, or at once when a lot is waiting. If the
output stops taking lines, the thread waits on it alone: the loop keeps
serving, lines beyond the bound are dropped, and once the output moves
again one line says how many were lost, where they were lost.

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
from typing import Any, TextIO

__all__ = ["LogWriter", "dropped_line"]

DEFAULT_INTERVAL = 0.05
# What may wait in memory for a stalled output, in characters.
DEFAULT_MAX_PENDING = 1 << 20
# Write at once, without waiting out the interval, when this much waits.
DEFAULT_LARGE = 64 << 10
# One write call at most this big, so that close() can see progress.
_CHUNK = 64 << 10
# close() gives up on an output that takes nothing for this long.
DEFAULT_STALL = 0.4
# An output made non-blocking by someone else (a shared pipe): retry after this.
_RETRY = 0.01


def dropped_line(count: int) -> str:
    """The one line that reports lost log lines."""
    lines = "line" if count == 1 else "lines"
    return f"{count} log {lines} dropped: the log output is not being read"


class LogWriter:
    """A callable log sink (``writer(line)``) that writes on a thread of its own.

    ``stream``: a text stream such as ``sys.stdout``. Calling the writer never
    blocks and never raises; ``close(stall)`` writes what is left and stops
    the thread, giving up on an output that takes nothing for ``stall``
    seconds. ``dropped`` counts the lines lost so far.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = DEFAULT_INTERVAL,
        max_pending: int = DEFAULT_MAX_PENDING,
        large: int = DEFAULT_LARGE,
        name: str = "spike-log",
    ) -> None:
        self._stream = stream
        buffer = getattr(stream, "buffer", None)
        self._raw: Any = getattr(buffer, "raw", None)
        self._encoding = getattr(stream, "encoding", None) or "utf-8"
        self._interval = interval
        self._max_pending = max_pending
        self._large = large
        # Lines (str) and drop reports (int: how many lines were lost at
        # that point). The loop appends, the writer thread pops: both are
        # single, atomic deque operations, so no lock is needed.
        self._queue: collections.deque[str | int] = collections.deque()
        # Counters each written by one thread only, so no update is lost.
        self._added = 0  # characters queued (loop)
        self._taken = 0  # characters taken off the queue (writer)
        self._dropping = 0  # lines dropped since the last one queued (loop)
        self.dropped = 0  # lines lost in all (loop)
        # Lines queued; line ends written, and drop reports among them.
        self._queued_lines = 0  # (loop)
        self._written_ends = 0  # (writer)
        self._written_reports = 0  # (writer)
        self._progress = 0  # chunks written (writer)
        self._broken = False  # the output failed for good (writer)
        self._closing = False
        self._wake = threading.Event()  # something waits to be written
        self._hurry = threading.Event()  # much waits, or closing: do not wait out the interval
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        """Queue one line (no newline). Never blocks: drops it when the queue is full."""
        size = len(line) + 1
        pending = self._added - self._taken + size
        if pending > self._max_pending or self._broken:
            self._dropping += 1
            self.dropped += 1
            return
        if self._dropping:
            self._queue.append(self._dropping)
            self._dropping = 0
        self._queue.append(line)
        self._added += size
        self._queued_lines += 1
        if not self._wake.is_set():
            self._wake.set()
        if pending > self._large and not self._hurry.is_set():
            self._hurry.set()

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
        self._hurry.set()
        self._wake.set()
        while self._thread.is_alive():
            progress = self._progress
            self._thread.join(stall)
            if self._progress == progress:
                break
        if self._thread.is_alive() or self._broken:
            # Given up on: what never went out is lost too.
            written = self._written_ends - self._written_reports
            self.dropped += max(0, self._queued_lines - written)
            self._queued_lines = written
            return False
        return True

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
            self._wake.clear()
            self._hurry.clear()
            while self._queue:
                text, reports = self._take()
                if self._write(text):
                    self._written_reports += reports
            last = time.monotonic()
            if self._closing and not self._queue:
                return

    def _take(self) -> tuple[str, int]:
        """Up to about one chunk of queued lines as text, drop reports in
        place; and how many reports that is."""
        parts: list[str] = []
        size = 0
        reports = 0
        queue = self._queue
        while queue and size < _CHUNK:
            item = queue.popleft()
            if isinstance(item, int):
                parts.append(dropped_line(item))
                reports += 1
                continue
            parts.append(item)
            size += len(item) + 1
        self._taken += size
        parts.append("")
        # sys.stdout turns "\n" into os.linesep; writing below it, so must we.
        return os.linesep.join(parts), reports

    def _write(self, text: str) -> bool:
        """Write it all; False if the output failed (for good: it is not tried again)."""
        if self._broken:
            return False
        try:
            if self._raw is None:
                self._stream.write(text)
                self._stream.flush()
                self._written_ends += text.count("\n")
                self._progress += 1
                return True
            data = memoryview(text.encode(self._encoding, "backslashreplace"))
            while data:
                written = self._raw.write(data[:_CHUNK])
                if written is None:  # non-blocking output, full for now
                    time.sleep(_RETRY)
                    continue
                # Lines that went out whole, counted as they go: a write
                # stuck halfway still leaves an exact count of what was lost.
                self._written_ends += data[:written].tobytes().count(b"\n")
                data = data[written:]
                self._progress += 1
        except (OSError, ValueError):
            # Closed or broken for good (EPIPE, a closed file): stop trying;
            # the server goes on without its log.
            self._broken = True
            return False
        return True
