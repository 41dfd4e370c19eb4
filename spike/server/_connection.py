"""One client's connection: its framer, held input, unsent replies and turns.

A :class:`Connection` never touches the poller, the timers or the other
connections itself: it asks its :class:`~spike.server.Server` through a
few methods (``mark_active``, ``queue_turn``, ``schedule_flush``, ...), so
each class keeps its own state private.
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import traceback
from typing import TYPE_CHECKING, Any

from .._logwriter import display_line as _display_line
from .._logwriter import display_text
from ..errors import NO_ID, OP_FAILED, OVERLOADED, LineTooLong, ProtocolError
from ..protocol import (
    Invalid,
    LineFramer,
    Request,
    check_utf8,
    encode_error,
    encode_result,
    encode_text,
    format_address,
    parse_message,
)
from ._net import queued_for_peer
from ._poller import READ as _READ
from ._poller import WRITE as _WRITE

if TYPE_CHECKING:
    from ._loop import Server

__all__ = ["Connection"]

_RECV_SIZE = 65536
_TURN_BYTES = 65536  # at most this many bytes framed per turn (see Server.turn_lines())
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
# While lingering after a fatal error reply, input is read and dropped, up
# to this much (then the connection closes at once).
_LINGER_MAX_BYTES = 4 * _RECV_SIZE
_ERROR_CHARS = 2000  # an error's own text (an exception message) is shortened later


def json_id(request_id: Any) -> str:
    """A request id as it was sent (JSON), for a log line."""
    return json.dumps(request_id, ensure_ascii=False)


def _plural(count: int, noun: str) -> str:
    """``1 byte``, ``2 bytes``: a count and its noun, for log lines."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


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
    answers only a share of it (see ``Server.turn_lines()``); a connection with
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
        # Set by the server (its internal API, below): the kernel's unsent
        # bytes at the last idle check, whether this connection waits in the
        # turn queue, and whether a flush of its partial line is scheduled.
        self.unsent_at_idle_check = 0
        self.turn_queued = False
        self.flush_scheduled = False
        # Received bytes not cut into lines yet, and lines not answered yet.
        self._backlog = b""
        self._backlog_pos = 0
        self._lines: list[bytes] = []
        self._line_pos = 0
        self._held = 0  # this connection's part of the server's buffered-input total
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
        self._log_line = server.fast_log_line
        self._log_lines = server.fast_log_lines
        self._error_log = server.error_log
        self._idle_timeout = server.idle_timeout
        self._flush_after = server.flush_after
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
            self.server.mark_active(self)
        if self.flush_scheduled:  # new bytes: the held line is not idle
            self.server.cancel_flush(self)
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
            and not self.framer.mid_line
            and not self._out
        ):
            self.messages += 1
            self.server.total_messages += 1
            if self._log_line is not None:
                self._log_line("Received: ", data[:-1])
            elif self._log is not None:
                self._log(f"Received: {_display_line(data[:-1])}")
            self._send(data)
            return
        if (
            data[-1] == 10
            and data.find(b"\n") == len(data) - 1
            and not self.framer.mid_line
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
        lines_left = self.server.turn_lines()
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
                self.server.queue_turn(self)
        else:
            self._send_corked()
            if self._flush_after and self.framer.partial_bytes and not self._closed:
                self.server.schedule_flush(self)
        self._update_interest()

    def on_writable(self) -> None:
        """Send more of the replies that were waiting for buffer space."""
        out = self._out
        if self._closed or not out:
            return
        if self._idle_timeout is not None:
            # A client taking its replies is busy, not idle, even while the
            # server has stopped reading from it.
            self.server.mark_active(self)
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
                self.server.queue_turn(self)
            elif self._flush_after and self.framer.partial_bytes:
                # Reading again: the held line's idle time starts now.
                self.server.schedule_flush(self)
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
        if self.framer.partial_bytes:
            note += f"; {_plural(self.framer.partial_bytes, 'byte')} of an unfinished line dropped"
        unsent = self._out_bytes + self._corked_bytes + queued_for_peer(self.sock)
        if unsent:
            note += f"; {_plural(unsent, 'byte')} of replies not delivered"
        self._close(note)

    @property
    def closed(self) -> bool:
        """True once the connection has been closed."""
        return self._closed

    @property
    def buffered_bytes(self) -> int:
        """Input held for this connection: its partial line and bytes not yet answered."""
        return self._held

    # -- for the server (its internal API; not for subclasses) -------------
    @property
    def closing(self) -> bool:
        """True once no more messages will be answered (a final error reply,
        or the client's end of stream): the connection closes once its
        replies are out."""
        return self._closing

    def release_held(self) -> int:
        """Stop counting this connection's held input; return how much it was
        (the server takes it off its total when the connection goes)."""
        held, self._held = self._held, 0
        return held

    # -- internals ---------------------------------------------------------
    def _has_input(self) -> bool:
        """True while received input waits for a turn."""
        return self._backlog_pos < len(self._backlog) or self._line_pos < len(self._lines)

    def _account(self) -> None:
        """Bring the server's buffered-input total up to date with this connection."""
        held = self.framer.partial_bytes + len(self._backlog) - self._backlog_pos
        change = held - self._held
        if change:
            self._held = held
            server = self.server
            server.buffered_bytes += change
            if change > 0 and server.buffered_bytes > server.max_buffered_bytes:
                server.enforce_budget()

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
            self.server.watch(self, want)

    def _close(self, note: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        self.server.release(self)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._log is not None:
            count = _plural(self.messages, "message")
            self._log(f"Connection closed: {format_address(self.peer)} ({count}{note})")

    def _echo_batch(self, lines: list[bytes]) -> bytes | None:
        """The replies to lines that are all plain ASCII text, echoed with a
        few calls for the whole batch; None if any line needs more care."""
        joined = b"\n".join(lines)
        if not joined.isascii() or joined[:1] == b"{" or b"\n{" in joined:
            return None
        count = len(lines)
        self.messages += count
        self.server.total_messages += count
        if self._log_lines is not None:
            self._log_lines("Received: ", lines, joined)
        elif self._log is not None:
            for line in lines:
                self._log(f"Received: {_display_line(line)}")
        return joined + b"\n"

    def _answer(self, line: bytes) -> bytes:
        """The reply bytes for one message line (never raises)."""
        self.messages += 1
        self.server.total_messages += 1
        if self._log_line is not None:
            self._log_line("Received: ", line)
        elif self._log is not None:
            self._log(f"Received: {_display_line(line)}")
        # Fast path: the echo needs no text, only valid UTF-8 (ASCII is).
        if self._plain_echo and line[:1] != b"{":
            if line.isascii():
                return line + b"\n"
            invalid = check_utf8(line)
            if invalid is None:
                return line + b"\n"
            return encode_error(invalid.code, invalid.message)
        message = parse_message(line)
        if type(message) is Request:  # the commonest case first
            request_id = message.id
            try:
                result = self.handle_request(message.op, message.params)
            except ProtocolError as exc:
                if exc.__cause__ is not None and exc.code == OP_FAILED:
                    self._log_op_failure(message.op, request_id, exc)
                return encode_error(exc.code, exc.message, request_id)
            except Exception as exc:  # a handle_request override crashed
                return self._failed("handle_request", exc, request_id)
            try:
                return encode_result(result, request_id)
            except (TypeError, ValueError) as exc:
                return self._failed("the result", exc, request_id, "is not JSON-serializable")
        if type(message) is Invalid:
            return encode_error(message.code, message.message, message.id)
        try:
            return encode_text(self.handle_text(message.text))
        except Exception as exc:
            return self._failed("handle_text", exc)

    def _log_op_failure(self, op: str, request_id: Any, exc: ProtocolError) -> None:
        """One error line naming the op, the request id and the op's exception
        (and its traceback, when the server was asked for them)."""
        if self._error_log is None:
            return
        cause = exc.__cause__
        where = "" if request_id is NO_ID else f" (request id {json_id(request_id)})"
        text = f"op {op!r} failed{where}: {type(cause).__name__}: {cause}"
        self._error_log(f"Error: {format_address(self.peer)}: {display_text(text, _ERROR_CHARS)}")
        if self.server.op_tracebacks and cause is not None:
            for line in "".join(traceback.format_exception(cause)).splitlines():
                self._error_log(f"  {display_text(line, _ERROR_CHARS)}")

    def _failed(
        self, what: str, exc: Exception, request_id: Any = NO_ID, how: str = "failed"
    ) -> bytes:
        message = f"{what} {how}: {type(exc).__name__}: {exc}"
        if self._error_log is not None:
            self._error_log(f"Error: {display_text(message, _ERROR_CHARS)}")
        return encode_error(OP_FAILED, message, request_id)

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
            self._hold_unsent(memoryview(data)[sent:])

    def _hold_unsent(self, unsent: memoryview) -> None:
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
        replies.append(encode_error(exc.code, exc.message, exc.request_id))
        self._send_final_error(b"".join(replies))

    def refuse_overloaded(self, total: int, limit: int) -> None:
        """Refuse this connection to keep the server within its input budget."""
        held = self._held
        if self._error_log is not None:
            self._error_log(
                f"Error: {format_address(self.peer)} refused: unfinished input on all "
                f"connections reached {_plural(total, 'byte')} (the limit is {limit}) and this "
                f"connection held the most ({_plural(held, 'byte')}); closing the connection"
            )
        self._send_final_error(
            encode_error(
                OVERLOADED,
                f"the server holds too much unfinished input from all its clients; this "
                f"connection held the most ({_plural(held, 'byte')}), so it is closed",
            )
        )

    def _send_final_error(self, data: bytes) -> None:
        """Send a final error reply, then close (after a line_too_long, or when overloaded)."""
        self._closing = True
        self._drop_input()
        if self.flush_scheduled:
            self.server.cancel_flush(self)
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
        self.server.start_linger(self)

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
