"""The pipe's server: one thread, one event loop (see :mod:`spike._poller`), many clients.

:class:`Server` owns the listening socket and the loop; each accepted socket
gets a :class:`Connection` that holds that client's state (its line framer,
unsent reply bytes, message count). Every wait is bounded, so Ctrl+C and
:meth:`Server.shutdown` take effect promptly on every platform, and no
client can block another: sockets are non-blocking and a client that stops
reading its replies only stops its own connection from being read.

Run it from a terminal with ``spike-server`` (or ``python -m spike.server``);
use it from Python with :func:`running_server`.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._logwriter import LogWriter, display_text
from .._logwriter import display_line as _display_line
from .._poller import READ as _READ
from .._poller import READY_READ as _READY_READ
from .._poller import READY_WRITE as _READY_WRITE
from .._poller import WRITE as _WRITE
from .._poller import Poller
from ..errors import (
    BAD_UTF8,
    NO_ID,
    OP_FAILED,
    OVERLOADED,
    AddressInUseError,
    BindError,
    LineTooLong,
    PipeError,
    ProtocolError,
)
from ..ops import OpRegistry, default_ops
from ..protocol import (
    DEFAULT_HOST,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_PORT,
    LineFramer,
    decode_message,
    encode_error,
    encode_result,
    encode_text,
    format_address,
)

__all__ = [
    "AddressInUseError",
    "BindError",
    "Connection",
    "Server",
    "display_text",
    "running_server",
]

DEFAULT_FLUSH_AFTER = 0.25
# The stdlib socketserver's backlog of 5 drops connections when 1,000 clients
# connect at once; the kernel caps this at its own maximum (somaxconn).
DEFAULT_BACKLOG = 4096
# Unfinished input (partial lines, and bytes received but not yet answered)
# the server holds across all connections before it refuses the biggest holders.
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
_RECV_SIZE = 65536
# A connection's share of one loop turn: the messages of one pass shared
# among the connections with input waiting (but never fewer than the
# minimum each), and at most this many bytes framed. The rest of what it
# sent waits in its buffer for its next turn, so a client that sends
# thousands of tiny lines at once cannot hold the loop while everyone else
# waits, and a client alone still answers in large, cheap batches.
_PASS_LINES = 1024
_MIN_TURN_LINES = 8
_TURN_BYTES = 65536
# Received bytes are cut into lines this many at a time, which bounds the
# list of lines held per connection (a 64 KiB chunk of "{\n" would be
# 32,768 list entries).
_WINDOW_BYTES = 4096
# While more than this many reply bytes wait for a client to read them, the
# server stops answering its input: a client that does not read stalls
# only itself. It starts again once half of that has gone out.
_OUTPUT_CAP = 256 * 1024
# Replies to a backlog are sent in batches of about this size, not after
# every turn: fewer system calls, and fewer wake-ups of the reader.
_CORK_BYTES = 65536
# Accept at most this many new clients per loop pass, so a connection storm
# cannot starve clients that are already talking.
_ACCEPT_BATCH = 128
# After accept() fails for lack of resources (too many open files), wait
# this long before trying again instead of spinning on a readable listener.
_ACCEPT_RETRY_DELAY = 0.1
# After a fatal error reply the server stops sending (FIN) but keeps reading
# and discarding for a moment: closing with unread input would send a reset,
# which can destroy the error reply before the client reads it.
_LINGER_SECONDS = 2.0
_LINGER_MAX_BYTES = 4 * _RECV_SIZE
_ERROR_CHARS = 2000  # an error's own text (an exception message) is shortened later

Log = Callable[[str], None]


def _bytes(count: int) -> str:
    return f"{count} byte" + ("" if count == 1 else "s")


class Connection:
    """One client's connection, driven by :class:`Server`'s event loop.

    Methods for the caller (the server loop):
        ``on_readable()`` read and answer what arrived; ``on_writable()``
        send replies the socket could not take at once; ``take_turn()``
        answer the next share of input left over from an earlier turn;
        ``flush_idle()`` answer an unterminated line that has sat idle for
        ``flush_after``; ``close()`` close the socket and update the
        server's books; ``close_idle()`` the same after ``idle_timeout``
        without traffic.

    Methods to override (in a subclass passed as ``Server(connection_class=...)``):
        ``handle_text(text) -> str`` the reply to a plain-text message
        (default: the same text); ``handle_request(op, params) -> result``
        the result of a JSON request (default: the server's op registry).

    Attributes: ``server``, ``peer`` (client's address), ``messages``
    (messages received so far), ``sock``, ``buffered_bytes`` (input held).

    How input flows: one ``recv()`` of up to 64 KiB at a time, and no
    further ``recv()`` until every line in it is answered. Each loop turn
    answers only a share of it (see ``_PASS_LINES``); a connection with
    more left queues itself for the next turn, behind every other
    connection with work waiting.
    """

    def __init__(self, server: Server, sock: socket.socket, peer: tuple[Any, ...]) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.messages = 0
        self.framer = LineFramer(server.max_line_bytes)
        self.last_active = 0.0  # when bytes last moved either way (with idle_timeout)
        self._queued_at_check = 0  # the kernel's unsent bytes at the last idle check
        # Received bytes not cut into lines yet, and lines not answered yet.
        self._backlog = b""
        self._backlog_pos = 0
        self._lines: list[bytes] = []
        self._line_pos = 0
        self._held = 0  # this connection's part of the server's buffered-input total
        self._queued = False  # waiting in the server's queue for a turn
        # Replies not handed to the socket yet because more input is being
        # answered (sent together once it is, or once there are enough).
        self._corked: list[bytes] = []
        self._corked_bytes = 0
        # Reply bytes the socket has not taken yet, as a queue of chunks: a
        # big reply is sent from a moving view, never shifted down after
        # each partial send.
        self._out: collections.deque[bytes | memoryview] = collections.deque()
        self._out_bytes = 0
        self._paused = False  # too many unsent replies: input waits
        self._interest = _READ  # what the poller watches for
        self._closing = False  # no more messages: close once replies are out
        self._lingering = False  # draining input after a fatal error reply
        self._eof = False  # the client has finished sending
        self._discarded = 0  # bytes ignored while closing
        self._closed = False
        self._log = server.log
        self._log_line = server._log_line
        self._log_lines = server._log_lines
        self._error_log = server.error_log
        self._idle_timeout = server.idle_timeout
        self._flush_after = server.flush_after
        self._flush_scheduled = False
        # Plain echo needs no decode/encode round trip: reply with the bytes.
        self._plain_echo = type(self).handle_text is Connection.handle_text
        self._max_reply = server.max_line_bytes + 1  # longest line plus "\n"

    # -- methods to override ---------------------------------------------
    def handle_text(self, text: str) -> str:
        """Reply to a plain-text message. The default echoes it."""
        return text

    def handle_request(self, op: str, params: dict[str, Any]) -> Any:
        """Result of a JSON request; raise ProtocolError for an error reply."""
        return self.server.ops.call(op, params, self)

    # -- methods for the caller --------------------------------------------
    def on_readable(self) -> None:
        """Read once; answer the first turn's share of what arrived."""
        if not self._interest & _READ:
            # Not reading now (paused, or input waits for its turn); an error
            # or hang-up report comes anyway and is met once reading resumes.
            return
        try:
            data = self.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer, or already closed
            self.close()
            return
        if not data:
            self._end_of_stream()
            return
        if self._closing:  # lingering after a fatal error: ignore input
            self._discarded += len(data)
            if self._discarded > _LINGER_MAX_BYTES:
                self.close()
            return
        if self._idle_timeout is not None:
            self.server._touch(self)
        if self._flush_scheduled:  # new bytes: the held line is not idle
            self.server._unschedule_flush(self)
        # Fast path for the commonest case, one whole ASCII plain-text line
        # echoed: the reply is exactly the bytes received. Anything else (a
        # "\r\n", "{", a held partial line, non-ASCII, several lines, an
        # over-long line) takes the general path through the framer below.
        if (
            self._plain_echo
            and data[-1] == 10
            and data[0] != 123  # "{"
            and data.find(b"\n") == len(data) - 1
            and data[-2:-1] != b"\r"
            and len(data) <= self._max_reply
            and data.isascii()
            and not self.framer.holding
            and not self._out
        ):
            self.messages += 1
            self.server._message_count += 1
            if self._log_line is not None:
                self._log_line("Received: ", data[:-1])
            elif self._log is not None:
                self._log(f"Received: {_display_line(data[:-1])}")
            self._send(data)
            return
        if (
            data[-1] == 10
            and data.find(b"\n") == len(data) - 1
            and not self.framer.holding
            and not self._out
        ):
            # One whole line (a JSON request, say): answered at once.
            try:
                (line,) = self.framer.feed(data)
            except LineTooLong as exc:
                self._refuse_long_line(exc, [])
                return
            self._send(self._answer(line))
            return
        self._backlog = data
        self._backlog_pos = 0
        self._account()
        if not self._closing:  # the input budget may have refused this connection
            self.take_turn()

    def take_turn(self) -> None:
        """Answer up to one turn's share of the input held; queue another turn if more is left."""
        if self._closed or self._closing or self._paused:
            return
        # This pass's lines, shared among everyone who may need a turn.
        busy = len(self.server._happened) + len(self.server._ready)
        lines_left = _PASS_LINES if busy < 2 else max(_MIN_TURN_LINES, _PASS_LINES // busy)
        bytes_left = _TURN_BYTES
        replies: list[bytes] = []
        answer = self._answer
        while True:
            lines, pos = self._lines, self._line_pos
            if pos < len(lines):
                batch = lines[pos : pos + lines_left]
                self._line_pos = pos + len(batch)
                lines_left -= len(batch)
                echoed = self._echo_batch(batch) if self._plain_echo else None
                if echoed is not None:
                    replies.append(echoed)
                else:
                    replies.extend([answer(line) for line in batch])
                if not lines_left:
                    break
                continue
            backlog, start = self._backlog, self._backlog_pos
            if start >= len(backlog) or bytes_left <= 0:
                break
            window = backlog[start : start + _WINDOW_BYTES]
            self._backlog_pos = start + len(window)
            bytes_left -= len(window)
            try:
                self._lines = self.framer.feed(window)
            except LineTooLong as exc:
                replies.extend([answer(line) for line in exc.lines])
                self._refuse_long_line(exc, replies)
                return
            self._line_pos = 0
        if self._line_pos >= len(self._lines):
            self._lines = []
            self._line_pos = 0
        if self._backlog_pos >= len(self._backlog):
            self._backlog = b""
            self._backlog_pos = 0
        if replies:
            self._queue_reply(replies[0] if len(replies) == 1 else b"".join(replies))
        # (Framing moves bytes from the backlog to a partial line: the total
        # held never grows here, so this cannot refuse the connection.)
        self._account()
        if self._closed:
            return
        if self._has_input():
            if self._corked_bytes >= _CORK_BYTES:
                self._send_corked()
            if not self._paused and not self._closed:
                self.server._queue_turn(self)
        else:
            self._send_corked()
            if self._flush_after and self.framer.pending and not self._closed:
                self.server._schedule_flush(self)
        self._update_interest()

    def on_writable(self) -> None:
        """Send more of the replies that were waiting for buffer space."""
        out = self._out
        if self._closed or not out:
            return
        if self._idle_timeout is not None:
            # A client taking its replies is busy, not idle, even while the
            # server has stopped reading from it.
            self.server._touch(self)
        while out:
            chunk = out[0]
            try:
                sent = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            self._out_bytes -= sent
            if sent < len(chunk):
                out[0] = memoryview(chunk)[sent:]
                break
            out.popleft()
        if not out and self._closing:
            self._finish_closing()
            return
        if self._paused and self._out_bytes <= _OUTPUT_CAP // 2:
            self._paused = False
            if self._has_input():
                self.server._queue_turn(self)
            elif self._flush_after and self.framer.pending:
                # Reading again: the held line's idle time starts now.
                self.server._schedule_flush(self)
        self._update_interest()

    def flush_idle(self) -> None:
        """Answer the unterminated line held by the framer as one message."""
        if self._paused or self._has_input() or self._closing:
            # Not reading (back-pressure, or earlier input still being
            # answered): the rest of the line may be sitting unread in the
            # socket. The wait starts again once reading resumes.
            return
        line = self.framer.flush()
        self._account()
        if line is not None and not self._closed:
            self._send(self._answer(line))

    def close(self) -> None:
        """Close the socket (idempotent) and log it."""
        self._close()

    def close_idle(self) -> None:
        """Close a connection that had no traffic for the server's
        ``idle_timeout``; the log line says so, and what was lost."""
        note = f"; idle for {self._idle_timeout:g} s"
        if self.framer.pending:
            note += f"; {_bytes(self.framer.pending)} of an unfinished line dropped"
        unsent = self._out_bytes + self._corked_bytes + _queued_for_peer(self.sock)
        if unsent:
            note += f"; {_bytes(unsent)} of replies not delivered"
        self._close(note)

    @property
    def closed(self) -> bool:
        """True once the connection has been closed."""
        return self._closed

    @property
    def buffered_bytes(self) -> int:
        """Input held for this connection: its partial line and bytes not yet answered."""
        return self._held

    # -- internals ---------------------------------------------------------
    def _has_input(self) -> bool:
        """True while received input waits for a turn."""
        return self._backlog_pos < len(self._backlog) or self._line_pos < len(self._lines)

    def _account(self) -> None:
        """Bring the server's buffered-input total up to date with this connection."""
        held = self.framer.pending + len(self._backlog) - self._backlog_pos
        change = held - self._held
        if change:
            self._held = held
            self.server._buffered += change
            if change > 0 and self.server._buffered > self.server.max_buffered_bytes:
                self.server._enforce_budget()

    def _drop_input(self) -> None:
        """Forget every byte of input held (the connection is being refused)."""
        self._backlog = b""
        self._backlog_pos = 0
        self._lines = []
        self._line_pos = 0
        self.framer.flush()
        self._account()

    def _update_interest(self) -> None:
        """Tell the poller what to watch: writable while replies wait, readable
        while the connection may take more input."""
        if self._closed:
            return
        want = _WRITE if self._out else 0
        if self._lingering or not (self._closing or self._paused or self._has_input()):
            want |= _READ
        if want != self._interest:
            self._interest = want
            self.server._set_interest(self, want)

    def _close(self, note: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self.server._forget(self)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._log is not None:
            count = f"{self.messages} message" + ("" if self.messages == 1 else "s")
            self._log(f"Connection closed: {format_address(self.peer)} ({count}{note})")

    def _echo_batch(self, lines: list[bytes]) -> bytes | None:
        """The replies to lines that are all plain ASCII text, echoed with a
        few calls for the whole batch; None if any line needs more care."""
        joined = b"\n".join(lines)
        if not joined.isascii() or joined[:1] == b"{" or b"\n{" in joined:
            return None
        count = len(lines)
        self.messages += count
        self.server._message_count += count
        if self._log_lines is not None:
            self._log_lines("Received: ", lines, joined)
        elif self._log is not None:
            for line in lines:
                self._log(f"Received: {_display_line(line)}")
        return joined + b"\n"

    def _answer(self, line: bytes) -> bytes:
        """The reply bytes for one message line (never raises)."""
        self.messages += 1
        self.server._message_count += 1
        if self._log_line is not None:
            self._log_line("Received: ", line)
        elif self._log is not None:
            self._log(f"Received: {_display_line(line)}")
        if line[:1] != b"{":
            # The echo needs no text, only valid UTF-8 (ASCII is).
            if self._plain_echo and line.isascii():
                return line + b"\n"
            try:
                text = line.decode()
            except UnicodeDecodeError as exc:
                return encode_error(BAD_UTF8, f"not valid UTF-8 (byte {exc.start})")
            if self._plain_echo:
                return line + b"\n"
            try:
                return encode_text(self.handle_text(text))
            except Exception as exc:
                return self._failed("handle_text", exc)
        request_id = NO_ID
        try:
            request = decode_message(line)
            assert isinstance(request, dict)  # the line starts with "{"
            request_id = request.pop("id", NO_ID)
            result = self.handle_request(request.pop("op"), request)
        except ProtocolError as exc:
            if exc.__cause__ is not None and exc.code == OP_FAILED and self._error_log is not None:
                self._error_log(f"Error: {display_text(exc.message, _ERROR_CHARS)}")
            if request_id is NO_ID:  # decoding failed; the error may know the id
                request_id = exc.request_id
            return encode_error(exc.code, exc.message, request_id)
        except Exception as exc:  # a handle_request override crashed
            return self._failed("handle_request", exc, request_id)
        try:
            return encode_result(result, request_id)
        except (TypeError, ValueError) as exc:
            return self._failed("the result", exc, request_id, "is not JSON-serializable")

    def _failed(
        self, what: str, exc: Exception, request_id: Any = NO_ID, how: str = "failed"
    ) -> bytes:
        message = f"{what} {how}: {type(exc).__name__}: {exc}"
        if self._error_log is not None:
            self._error_log(f"Error: {display_text(message, _ERROR_CHARS)}")
        return encode_error(OP_FAILED, message, request_id)

    def _error_reply(self, exc: ProtocolError) -> bytes:
        return encode_error(exc.code, exc.message, exc.request_id)

    def _queue_reply(self, data: bytes) -> None:
        """Hold reply bytes until the input being answered is done (keeps order)."""
        if self._out:  # already waiting for the socket: join the queue
            self._out.append(data)
            self._out_bytes += len(data)
            if self._out_bytes > _OUTPUT_CAP:
                self._paused = True
            return
        self._corked.append(data)
        self._corked_bytes += len(data)

    def _send_corked(self) -> None:
        if self._corked:
            data = self._corked[0] if len(self._corked) == 1 else b"".join(self._corked)
            self._corked = []
            self._corked_bytes = 0
            self._send(data)

    def _send(self, data: bytes) -> None:
        """Send now what the socket takes; keep the rest for on_writable()."""
        if self._out:  # keep order behind replies already waiting
            self._out.append(data)
            self._out_bytes += len(data)
            if self._out_bytes > _OUTPUT_CAP:
                self._paused = True
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self._keep(memoryview(data)[sent:])

    def _keep(self, unsent: memoryview) -> None:
        """Hold reply bytes the socket did not take, and wait until it can."""
        self._out.append(unsent)
        self._out_bytes += len(unsent)
        if self._out_bytes > _OUTPUT_CAP:
            # Back-pressure: a client that never reads its replies gets no
            # more answers (and its input is not read) until it does.
            self._paused = True
        self._update_interest()

    def _refuse_long_line(self, exc: LineTooLong, replies: list[bytes]) -> None:
        if self._error_log is not None:  # else the operator never learns why it closed
            self._error_log(
                f"Error: {format_address(self.peer)} sent a line longer than "
                f"{exc.limit} bytes; closing the connection"
            )
        replies.append(self._error_reply(exc))
        self._reject(b"".join(replies))

    def _refuse_overloaded(self, total: int, limit: int) -> None:
        """Refuse this connection to keep the server within its input budget."""
        held = self._held
        if self._error_log is not None:
            self._error_log(
                f"Error: {format_address(self.peer)} refused: unfinished input on all "
                f"connections reached {_bytes(total)} (the limit is {limit}) and this "
                f"connection held the most ({_bytes(held)}); closing the connection"
            )
        self._reject(
            encode_error(
                OVERLOADED,
                f"the server holds too much unfinished input from all its clients; this "
                f"connection held the most ({_bytes(held)}), so it is closed",
            )
        )

    def _reject(self, data: bytes) -> None:
        """Send a final error reply, then close (after a line_too_long, or when overloaded)."""
        self._closing = True
        self._drop_input()
        if self._flush_scheduled:
            self.server._unschedule_flush(self)
        self._queue_reply(data)
        self._send_corked()
        if not self._closed and not self._out:
            self._finish_closing()
        else:
            self._update_interest()

    def _finish_closing(self) -> None:
        """All replies are out: close, lingering first if the client may still send."""
        if self._eof:
            self.close()
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self._lingering = True
        self._update_interest()
        self.server._linger(self)

    def _end_of_stream(self) -> None:
        """The client closed its side: answer a final unterminated line, close."""
        if self._closing:
            self.close()
            return
        self._eof = True
        self._closing = True
        line = self.framer.flush()
        self._account()
        if line is not None:
            self._send(self._answer(line))
        if not self._closed and not self._out:
            self.close()
        else:
            self._update_interest()


class Server:
    """A TCP server speaking the pipe protocol (see :mod:`spike.protocol`).

    Binds and listens in the constructor, so a busy port raises
    :class:`AddressInUseError` (naming host and port) right away. Then call
    :meth:`serve_forever` (blocking) or use :func:`running_server`.

    ``ops``: the :class:`~spike.ops.OpRegistry` for JSON requests (default
    :data:`~spike.ops.default_ops`). ``max_line_bytes``: longest accepted
    line. ``idle_timeout``: close connections with no traffic in either
    direction for this many seconds (None: never). ``flush_after``: answer
    an unterminated line after this many idle seconds (0: only a newline or
    end of stream ends a message).
    ``max_buffered_bytes``: the most unfinished input (partial lines, and
    bytes received but not answered yet) held across all connections; past
    it the connections holding the most get an ``overloaded`` error reply
    and are closed, until the total is back under seven eighths of it.
    ``backlog``: the listen queue length. ``log``: called with one line of
    text per event (None: silent). ``error_log``: called instead of ``log``
    for the lines that report errors (``"Error: ..."``: a refused accept, a
    crashed handler, an over-long line), so errors can still be shown when
    ``log`` is None (default: ``log``). ``connection_class``: the
    :class:`Connection` subclass made for each client.

    Methods for the caller:
        ``serve_forever(poll_interval)`` run the loop until stopped;
        ``shutdown()`` stop the loop (from any thread, or from an op);
        ``close()`` stop, then close every connection and the listener (also
        on leaving a ``with`` block); ``wait_serving(timeout)`` wait until
        the loop runs; ``stats()`` the numbers the ``stats`` op reports.
        Attributes: ``address`` (the bound host and port), ``uptime``,
        ``open_connections``, ``total_connections``, ``total_messages``.

    ``log`` and ``error_log`` are called on the loop's thread, so they must
    not block: a :class:`~spike._logwriter.LogWriter` (what ``spike-server``
    uses) hands the lines to a thread of its own and never does.

    To change what the server does, do not subclass it: pass ``ops`` (new
    JSON ops) or a ``connection_class`` that overrides
    :meth:`Connection.handle_text` / :meth:`Connection.handle_request`.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        ops: OpRegistry | None = None,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        idle_timeout: float | None = None,
        flush_after: float = DEFAULT_FLUSH_AFTER,
        max_buffered_bytes: int = DEFAULT_MAX_BUFFERED_BYTES,
        backlog: int = DEFAULT_BACKLOG,
        log: Log | None = None,
        error_log: Log | None = None,
        connection_class: type[Connection] = Connection,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an integer from 0 to 65535, not {port!r}")
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive (or None for no timeout)")
        if flush_after < 0:
            raise ValueError("flush_after must be 0 (off) or positive")
        if max_buffered_bytes < 1:
            raise ValueError("max_buffered_bytes must be at least 1")
        self.ops = default_ops if ops is None else ops
        self.max_line_bytes = max_line_bytes
        self.idle_timeout = idle_timeout
        self.flush_after = flush_after
        self.max_buffered_bytes = max_buffered_bytes
        self.log = None if log is None else _never_raising(log)
        self.error_log = self.log if error_log is None else _never_raising(error_log)
        # A LogWriter never raises, and formats a batch of received lines
        # on its own thread: the loop hands over a pipelined burst at once.
        self._log_lines = log.lines if isinstance(log, LogWriter) else None
        self._log_line = log.line if isinstance(log, LogWriter) else None
        self.connection_class = connection_class
        self.total_connections = 0
        # Kept up to date as messages arrive, so stats cost the same with
        # ten connections or ten thousand.
        self._message_count = 0
        self._buffered = 0  # unfinished input held, all connections together
        self._connections: set[Connection] = set()
        # Connections with input left over from an earlier turn, in turn order.
        self._ready: collections.deque[Connection] = collections.deque()
        self._happened: list[tuple[int, int]] = []  # this loop pass's events
        # Deadlines are "now + a constant", so insertion order is deadline
        # order: the first entry is always the next one due.
        self._flush_due: collections.OrderedDict[Connection, float] = collections.OrderedDict()
        self._idle_order: collections.OrderedDict[Connection, None] = collections.OrderedDict()
        self._linger_due: collections.OrderedDict[Connection, float] = collections.OrderedDict()
        self._started = time.monotonic()
        self._listener = _listen(host, port, backlog)
        self._listener_fd = self._listener.fileno()
        sockname = self._listener.getsockname()
        self._address = (sockname[0], sockname[1])
        self._poller = Poller()
        self._accept_resume_at: float | None = None
        self._pause_reason = ""
        # A socket pair lets shutdown() wake the loop from another thread.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._poller.register(self._listener, _READ, None)
        self._poller.register(self._wake_r, _READ, self._wake_r)
        self._stop_requested = False
        self._serving = threading.Event()
        self._loop_done = threading.Event()
        self._loop_done.set()
        self._loop_thread: int | None = None
        self._closed = False

    # -- public API ----------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` actually bound (the real port after port 0)."""
        return self._address

    @property
    def uptime(self) -> float:
        """Seconds since the server was created."""
        return time.monotonic() - self._started

    @property
    def total_messages(self) -> int:
        """Messages received since the server started, on all connections."""
        return self._message_count

    @property
    def buffered_bytes(self) -> int:
        """Unfinished input held right now, all connections together."""
        return self._buffered

    @property
    def open_connections(self) -> int:
        """Number of connected clients right now."""
        return len(self._connections)

    def stats(self) -> dict[str, int]:
        """Connection statistics (what the ``stats`` op reports)."""
        return {
            "open_connections": len(self._connections),
            "total_connections": self.total_connections,
            "total_messages": self.total_messages,
        }

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve clients until :meth:`shutdown` (or Ctrl+C) stops the loop.

        ``poll_interval`` bounds every wait, so a KeyboardInterrupt is
        noticed within that time even where signals cannot interrupt
        ``select()`` (Windows).
        """
        if self._closed:
            raise PipeError("the server is closed")
        # Clear "done" before publishing the thread id: shutdown() only waits
        # when it sees the id, and must then find "done" cleared.
        self._loop_done.clear()
        self._loop_thread = threading.get_ident()
        self._serving.set()
        poll = self._poller.poll
        owners = self._poller.owners
        listener_fd = self._listener_fd
        wake_r = self._wake_r
        flush_due = self._flush_due
        idle_order = self._idle_order
        linger_due = self._linger_due
        ready = self._ready
        ready_read, ready_write = _READY_READ, _READY_WRITE
        try:
            while not self._stop_requested:
                if flush_due or idle_order or linger_due or self._accept_resume_at is not None:
                    timeout = self._run_timers(poll_interval)
                else:
                    timeout = poll_interval
                if ready:  # input waits for its turn: look for events, do not sleep
                    timeout = 0.0
                # Kept for take_turn(): who may want a share of this pass.
                self._happened = happened = poll(timeout)
                for fd, events in happened:
                    conn = owners.get(fd)
                    if conn is None:
                        if fd == listener_fd:
                            self._accept()
                        # else: closed earlier in this pass; nothing to do
                    elif conn is wake_r:
                        with contextlib.suppress(OSError):
                            wake_r.recv(4096)
                    else:
                        try:
                            if events & ready_read:
                                conn.on_readable()
                            if events & ready_write:
                                conn.on_writable()
                        except Exception as exc:  # a bug must cost one client, not all
                            self._drop(conn, exc)
                if ready:
                    self._take_turns()
        finally:
            self._stop_requested = False
            self._serving.clear()
            self._loop_thread = None
            self._loop_done.set()

    def wait_serving(self, timeout: float | None = None) -> bool:
        """Block until :meth:`serve_forever` is running; False on timeout."""
        return self._serving.wait(timeout)

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and return once it has stopped.

        Safe to call from any thread, and from inside an op (then it returns
        at once and the loop stops after the current pass).
        """
        self._stop_requested = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._loop_thread is not None and self._loop_thread != threading.get_ident():
            self._loop_done.wait()

    def close(self) -> None:
        """Stop serving if needed, close every connection and the listener."""
        if self._closed:
            return
        self.shutdown()
        self._closed = True
        self._ready.clear()
        for conn in list(self._connections):
            conn.close()
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._poller.unregister(self._listener)
        self._listener.close()
        self._poller.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else format_address(self.address)
        return f"<Server {state} open_connections={len(self._connections)}>"

    # -- the loop's helpers ----------------------------------------------------
    def _accept(self) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:  # the client gave up while queued
                continue
            except OSError as exc:  # e.g. too many open files: back off
                self._pause_accepting(f"cannot accept a connection: {exc.strerror or exc}")
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = self.connection_class(self, sock, peer)
            self._connections.add(conn)
            self.total_connections += 1
            self._poller.register(sock, _READ, conn)
            if self.idle_timeout is not None:
                self._touch(conn)
            if self.log is not None:
                self.log(f"Connection opened: {format_address(peer)}")

    def _pause_accepting(self, reason: str) -> None:
        """Stop watching the listener for a moment; queued clients wait in the backlog."""
        if self.error_log is not None and reason != self._pause_reason:
            self.error_log(f"Error: {reason}; new connections wait")
        self._pause_reason = reason
        self._poller.unregister(self._listener)
        self._accept_resume_at = time.monotonic() + _ACCEPT_RETRY_DELAY

    def _drop(self, conn: Connection, exc: Exception) -> None:
        """Close a connection whose handling raised, and say why."""
        if self.error_log is not None:
            self.error_log(
                f"Error: closing {format_address(conn.peer)} after {type(exc).__name__}: {exc}"
            )
        with contextlib.suppress(Exception):
            conn.close()
        # Whatever close() did not get to, the server must still let go of.
        self._forget(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _take_turns(self) -> None:
        """One more turn for every connection that has input left over, in order."""
        ready = self._ready
        for _ in range(len(ready)):
            conn = ready.popleft()
            conn._queued = False
            try:
                conn.take_turn()
            except Exception as exc:  # a bug must cost one client, not all
                self._drop(conn, exc)

    def _queue_turn(self, conn: Connection) -> None:
        if not conn._queued:
            conn._queued = True
            self._ready.append(conn)

    def _enforce_budget(self) -> None:
        """Refuse the connections holding the most input until the total is
        back under seven eighths of the budget.

        Pausing them instead would not free anything: a client that never
        ends its line keeps its bytes held for as long as it likes, and the
        rest of its line waits in the socket, out of reach. Refusing frees
        the memory at once and tells that client why. Going below the limit
        (not just to it) makes the sort here rare: each one frees at least
        an eighth of the budget.
        """
        limit = self.max_buffered_bytes
        total = self._buffered
        target = limit - limit // 8
        holders = sorted(
            (conn for conn in self._connections if conn._held and not conn._closing),
            key=_held_bytes,
            reverse=True,
        )
        for conn in holders:
            if self._buffered <= target:
                break
            conn._refuse_overloaded(total, limit)

    def _set_interest(self, conn: Connection, events: int) -> None:
        self._poller.modify(conn.sock, events)

    def _forget(self, conn: Connection) -> None:
        """Drop a closing connection from the poller and every table."""
        if conn in self._connections:
            self._connections.remove(conn)
        self._buffered -= conn._held
        conn._held = 0
        self._unschedule_flush(conn)
        self._idle_order.pop(conn, None)
        self._linger_due.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._poller.unregister(conn.sock)

    def _schedule_flush(self, conn: Connection) -> None:
        self._flush_due[conn] = time.monotonic() + self.flush_after
        self._flush_due.move_to_end(conn)
        conn._flush_scheduled = True

    def _unschedule_flush(self, conn: Connection) -> None:
        self._flush_due.pop(conn, None)
        conn._flush_scheduled = False

    def _linger(self, conn: Connection) -> None:
        self._linger_due[conn] = time.monotonic() + _LINGER_SECONDS

    def _touch(self, conn: Connection) -> None:
        conn.last_active = time.monotonic()
        self._idle_order[conn] = None
        self._idle_order.move_to_end(conn)

    def _run_timers(self, poll_interval: float) -> float:
        """Run what is due (flushes, idle closes, accept retry); return the wait until the next."""
        now = time.monotonic()
        next_due = now + poll_interval
        flush_due = self._flush_due
        while flush_due:
            conn, due = next(iter(flush_due.items()))
            if due > now:
                next_due = min(next_due, due)
                break
            self._unschedule_flush(conn)
            try:
                conn.flush_idle()
            except Exception as exc:
                self._drop(conn, exc)
        idle_order = self._idle_order
        while idle_order and self.idle_timeout is not None:
            conn = next(iter(idle_order))
            due = conn.last_active + self.idle_timeout
            if due > now:
                next_due = min(next_due, due)
                break
            queued = _queued_for_peer(conn.sock)
            if queued != conn._queued_at_check:
                # Replies the server handed over have left the kernel since
                # the last look: the client is reading, just slowly.
                conn._queued_at_check = queued
                self._touch(conn)
                continue
            conn.close_idle()
        linger_due = self._linger_due
        while linger_due:
            conn, due = next(iter(linger_due.items()))
            if due > now:
                next_due = min(next_due, due)
                break
            conn.close()
        if self._accept_resume_at is not None:
            if self._accept_resume_at <= now:
                self._accept_resume_at = None
                self._poller.register(self._listener, _READ, None)
            else:
                next_due = min(next_due, self._accept_resume_at)
        return max(0.0, next_due - now)


if sys.platform.startswith("linux"):
    import fcntl
    import termios

    def _queued_for_peer(sock: socket.socket) -> int:
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

    def _queued_for_peer(sock: socket.socket) -> int:
        """Bytes in the socket's send buffer not yet acknowledged by the peer. 0 if unknown."""
        try:
            return sock.getsockopt(socket.SOL_SOCKET, _SO_NWRITE)
        except (OSError, ValueError):
            return 0

else:

    def _queued_for_peer(sock: socket.socket) -> int:
        """Windows and others offer no portable way to ask: 0 (unknown)."""
        return 0


def _held_bytes(conn: Connection) -> int:
    return conn._held


def _never_raising(log: Log) -> Log:
    """Wrap a log callable so that a failing one (say, a closed stdout)
    can never stop the server: its errors are ignored."""
    if isinstance(log, LogWriter):  # never raises; calling it directly is cheaper
        return log

    def safe_log(line: str) -> None:
        with contextlib.suppress(Exception):
            log(line)

    return safe_log


def _preferred_address(
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


def _listen(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking listening socket, or BindError naming host:port."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot listen on {where}: unknown host ({exc.strerror})") from None
    family, sockaddr = _preferred_address(infos)
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


@contextlib.contextmanager
def running_server(**server_kwargs: Any) -> Iterator[Server]:
    """Run a :class:`Server` on a background thread for the ``with`` block.

    Yields the server once its loop is running (``server.address`` holds
    the real port; pass ``port=0`` for a free one). On exit the server is
    shut down and closed.
    """
    poll_interval = server_kwargs.pop("poll_interval", 0.5)
    server = Server(**server_kwargs)
    thread = threading.Thread(
        target=server.serve_forever,
        args=(poll_interval,),
        name=f"spike-server-{server.address[1]}",
        daemon=True,
    )
    try:
        thread.start()
        if not server.wait_serving(timeout=10):
            raise PipeError("the server thread did not start within 10 s")
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.close()
