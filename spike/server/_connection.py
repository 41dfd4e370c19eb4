"""One client's connection: its framer, held input, unsent replies and its life.

A :class:`Connection` is driven by the server loop (``on_readable``,
``on_writable``, ``take_turn``, ...) and reports back only through the
small :class:`ConnectionHost` interface that :class:`~spike.server.Server`
implements: it never touches the poller, the timers, the other
connections or the server's attributes. The arrows point one way: this
module imports nothing of the loop.

Every answered line, however it arrived (one line alone, a pipelined
burst, a partial line flushed after ``flush_after``, the last line before
end of stream), goes through one method, :meth:`Connection._reply`: it
counts the message, logs it, decides the reply and queues it against the
output cap. A request whose op runs off the loop reserves its reply's
place instead (:mod:`._replies`); its reply arrives later through
:meth:`Connection.op_done` (or :meth:`Connection.op_timed_out`) and goes
out in request order.

When the server has a token, a connection starts ``AUTHENTICATING``: it
holds at most one short first line, which :mod:`._auth` judges; only then
is it ``OPEN`` (or refused with ``unauthorized``).
"""

from __future__ import annotations

import contextlib
import enum
import json
import socket
import sys
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .._display import display_text, plural
from .._logwriter import EventLog
from ..errors import NO_ID, OP_FAILED, OP_TIMEOUT, OVERLOADED, LineTooLong, ProtocolError
from ..ops import OpContext, OpRegistry, OpSpec, Params, RunsOn, ServerView, describe
from ..protocol import (
    AUTH_OP,
    MAX_AUTH_LINE_BYTES,
    LineFramer,
    Request,
    Text,
    encode_error,
    encode_result,
    format_address,
    parse_message,
)
from ._auth import Gate, hide_token, no_token_needed
from ._dispatch import PLAIN_RESULTS as _PLAIN_RESULTS
from ._dispatch import Outcome, failed_outcome, finish_op
from ._net import input_waiting, queued_for_peer
from ._poller import READ as _READ
from ._poller import WRITE as _WRITE
from ._replies import ReplyQueue, Slot

__all__ = ["ANSWERING", "Connection", "ConnectionHost", "Settings", "State"]

_RECV_SIZE = 65536
_TURN_BYTES = 65536  # at most this many bytes framed per turn (see ConnectionHost.turn_lines)
# Received bytes are cut into lines this many at a time, which bounds the
# list of lines held per connection (a 64 KiB chunk of "{\n" would be
# 32,768 list entries).
_WINDOW_BYTES = 4096
# High water mark: while more than this many reply bytes wait for a client
# to read them, the connection answers nothing more (even mid-pipeline) and
# reads nothing more, so a client that does not read stalls only itself.
# Low water mark: it starts again once half of that has gone out.
_OUTPUT_CAP = 256 * 1024
_OUTPUT_RESUME = _OUTPUT_CAP // 2
# Replies to a backlog are sent in batches of about this size, not after
# every line: fewer system calls, and fewer wake-ups of the reader.
_CORK_BYTES = 65536
# While lingering after a fatal error reply, input is read and dropped, up
# to this much (then the connection closes at once). A server that stops
# drops all there is, for its bounded drain time: the client is owed its
# replies, and closing on unread input would reset them away.
_LINGER_MAX_BYTES = 4 * _RECV_SIZE
_ERROR_CHARS = 2000  # an error's own text (an exception message) is shortened later
_RECEIVED = "Received: "


class State(enum.Enum):
    """A connection's life, one state at a time (after h11's ``_state.py``)."""

    #: The server has a token and this connection has not sent its auth
    #: line yet: at most one short line is read, and nothing is answered.
    AUTHENTICATING = "authenticating"
    #: Reading and answering.
    OPEN = "open"
    #: More than the output cap of replies waits unsent: nothing more is
    #: read or answered until the client reads (back-pressure).
    PAUSED = "paused"
    #: The client has finished sending: the replies already made go out,
    #: then the connection closes.
    DRAINING = "draining"
    #: The server is stopping: nothing more is answered, the replies
    #: already made go out, then the connection closes.
    STOPPING = "stopping"
    #: A final error reply goes out (an over-long line, or refused to keep
    #: the memory budget); then LINGERING.
    REFUSING = "refusing"
    #: Our side is shut; input is read and dropped until the client closes
    #: or the linger time is up, so a reset cannot destroy the last reply.
    LINGERING = "lingering"
    CLOSED = "closed"


#: The states in which a connection still answers what it reads.
ANSWERING = (State.OPEN, State.PAUSED)
# What the hot path compares with, as module names: reading an enum member
# off its class costs several times as much, on every message.
_OPEN = State.OPEN
_LOOP = RunsOn.LOOP
# A NamedTuple built the way its own _make() does, without the Python-level
# __new__ that checks defaults: an inline op's ctx, made for every request.
_tuple_new = tuple.__new__
# Most connections never run an op off the loop: until their first one they
# share this empty queue, which nothing writes to (a queue of their own holds
# a deque, about 600 bytes, and idle connections must stay cheap).
_NOTHING_OWED = ReplyQueue()
# The states that end once the last reply is out.
_FINISHING = (State.DRAINING, State.STOPPING, State.REFUSING)


@dataclass(frozen=True, slots=True)
class Settings:
    """What every connection of one server shares, fixed when the server starts."""

    ops: OpRegistry
    max_line_bytes: int
    idle_timeout: float | None
    flush_after: float
    log: EventLog | None
    error_log: Callable[[str], None] | None
    op_tracebacks: bool
    #: Requests of one connection whose ops may run at once; past it the
    #: connection is not read until replies come back.
    max_in_flight: int
    #: The server's whole budget: an op's reply bigger than this could never
    #: be held, so it becomes an error reply instead of a cut line.
    max_reply_bytes: int
    #: The server's token gate (None: no token; every connection starts OPEN).
    gate: Gate[Connection] | None = None
    #: ``ops.finder()``: the lookup of every request's op (here, not on each
    #: connection: an idle connection costs only what it holds itself).
    find_op: Callable[[str], OpSpec | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "find_op", self.ops.finder())


class ConnectionHost(ServerView, Protocol):
    """What a connection tells its server (a :class:`~spike.server.Server` is one).

    The server keeps its own books (turn queue, timers, totals) from these
    reports; it reads a connection's ``buffered`` and ``state`` but never
    writes them.
    """

    def turn_lines(self) -> int:
        """How many lines this connection may answer in its current turn."""
        ...

    def answered(self, count: int) -> None:
        """``count`` more messages were answered."""
        ...

    def buffered_changed(self, change: int) -> None:
        """The bytes this connection holds (unread input and unsent replies)
        changed by ``change``; the server may refuse connections to keep its budget."""
        ...

    def want_turn(self, conn: Connection) -> None:
        """Input is left over: give ``conn`` another turn after everyone waiting."""
        ...

    def want_flush(self, conn: Connection) -> None:
        """Answer ``conn``'s partial line once it has sat ``flush_after`` seconds."""
        ...

    def cancel_flush(self, conn: Connection) -> None:
        """New bytes arrived, or ``conn`` stops reading: forget its flush."""
        ...

    def active(self, conn: Connection) -> None:
        """Bytes moved on ``conn``: its idle time starts again."""
        ...

    def watch(self, conn: Connection, events: int) -> None:
        """Watch ``conn``'s socket for ``events`` (READ, WRITE, both or 0) from now on."""
        ...

    def lingering(self, conn: Connection) -> None:
        """``conn`` has shut its side: close it after the linger time."""
        ...

    def forget(self, conn: Connection) -> None:
        """``conn`` is closed: forget it."""
        ...

    def now(self) -> float:
        """The server's clock, in seconds."""
        ...

    def start_op(
        self, conn: Connection, slot: Slot, spec: OpSpec, params: dict[str, Any], ctx: OpContext
    ) -> None:
        """Run an op off the loop; its reply comes back through ``conn.op_done(slot, ...)``."""
        ...

    def op_settled(self, slot: Slot) -> None:
        """``slot`` has its reply (or its connection closed): the op is no longer owed."""
        ...


def _rest(chunk: bytes | memoryview, sent: int) -> bytes | memoryview:
    """What is left of a reply chunk after ``sent`` bytes went out.

    A view avoids copying a big reply after every partial send, but keeps
    all of it in memory: once more than half has gone out, the rest is
    copied, so what a connection holds is never more than twice what it
    has still to send (and each copy is at most half the one before).
    """
    left = len(chunk) - sent
    if left < sent:
        return bytes(chunk[sent:])
    return memoryview(chunk)[sent:]


def _is_plain_ascii(joined: bytes) -> bool:
    """True if every line of a batch (joined by ``\\n``) is ASCII plain text:
    its reply is the line itself."""
    # find(), not `in`: bytes' `in` first tries its operand as an int (a
    # TypeError raised and cleared), twice the cost of find() on a short line.
    return joined.isascii() and joined[:1] != b"{" and joined.find(b"\n{") < 0


class Connection:
    """One client's connection, driven by :class:`~spike.server.Server`'s loop.

    Methods for the caller (the server loop):
        ``on_readable()`` read and answer what arrived; ``on_writable()``
        send replies the socket could not take at once; ``take_turn()``
        answer the next share of input left over from an earlier turn;
        ``flush_idle()`` answer an unterminated line that sat idle for
        ``flush_after``; ``close_idle()`` close after ``idle_timeout``
        without traffic; ``refuse_overloaded()`` refuse it to keep the
        memory budget; ``stop()`` the server is stopping: send what is
        answered, then close; ``close()`` close now.

    An op never sees the connection: its ``ctx`` is a snapshot
    (:class:`~spike.ops.OpContext`) of ``peer``, ``messages`` and the
    server. Read-only for the server: ``state``, ``buffered`` (unread input
    and unsent replies, in bytes), ``unsent`` (reply bytes not handed to
    the socket), ``in_flight`` (ops running off the loop), ``sock``.
    Methods for the server's inbox: ``op_done()`` and ``op_timed_out()``.

    How input flows: one ``recv()`` of up to 64 KiB at a time, and no
    further ``recv()`` until every line in it is answered. Each loop turn
    answers only a share of it (``ConnectionHost.turn_lines()``), and stops
    early once more than the output cap of replies waits unsent; a
    connection with more left asks for another turn, behind every other
    connection with work waiting.
    """

    def __init__(
        self, host: ConnectionHost, sock: socket.socket, peer: tuple[Any, ...], settings: Settings
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.messages = 0
        self._gate = settings.gate
        self.state = State.OPEN if self._gate is None else State.AUTHENTICATING
        self._first = b""  # the start of the first line, before the token is accepted
        self.framer = LineFramer(settings.max_line_bytes)
        self._host = host
        self._settings = settings
        self._ops = settings.ops
        self._log = settings.log
        self._error_log = settings.error_log
        self._track_idle = settings.idle_timeout is not None
        self._max_in_flight = settings.max_in_flight
        self._longest_reply = settings.max_line_bytes + 1  # a line and its "\n"
        self._eof = False  # the client has finished sending (its FIN arrived)
        # Received bytes not cut into lines yet, and lines not answered yet.
        self._backlog = b""
        self._backlog_pos = 0
        self._lines: list[bytes] = []
        self._line_pos = 0
        # Replies made while input is being answered, sent together once it
        # is (or once there are _CORK_BYTES of them).
        self._corked: list[bytes] = []
        self._corked_bytes = 0
        # Reply bytes the socket has not taken yet, as a queue of chunks: a
        # big reply is sent from a moving view, never shifted down after
        # each partial send.
        self._out: deque[bytes | memoryview] = deque()
        self._out_bytes = 0
        # Replies owed in request order while ops run off the loop.
        self._replies = _NOTHING_OWED
        self._buffered = 0  # what the server was last told this connection holds
        self._discard_left = _LINGER_MAX_BYTES  # input still to drop while lingering
        self._interest = _READ  # what the poller watches for
        if self._gate is not None:
            self._gate.admit(self, host.now())

    # -- what an op and the server may read ---------------------------------
    @property
    def server(self) -> ServerView:
        """The server that accepted the connection (an op's ``ctx.server``)."""
        return self._host

    @property
    def buffered(self) -> int:
        """Bytes held for this connection: unread input and unsent replies."""
        return self._buffered

    @property
    def unsent(self) -> int:
        """Reply bytes made but not handed to the socket yet (those waiting
        their turn behind a running op included)."""
        return self._corked_bytes + self._out_bytes + self._replies.waiting_bytes

    @property
    def in_flight(self) -> int:
        """This connection's requests whose ops are running off the loop."""
        return self._replies.in_flight

    # -- methods for the caller (the loop) -----------------------------------
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
        if self.state is not _OPEN:
            if self.state is State.AUTHENTICATING:
                self._before_auth(data)
                return
            # lingering or stopping: input is dropped
            self._discard_left -= len(data)
            if self._discard_left < 0:
                self.close()
            return
        if self._track_idle:
            self._host.active(self)
        framer = self.framer
        if framer.mid_line:  # new bytes: the held line is not idle
            self._host.cancel_flush(self)
        elif (
            data[-1] == 10
            and data.find(b"\n") == len(data) - 1
            and not self._out
            and len(data) <= self._longest_reply
        ):
            # The commonest case, one whole line that nothing waits before:
            # answered and sent at once, without the framer's buffers.
            line = data[:-2] if data[-2:-1] == b"\r" else data[:-1]
            if data[0] != 123 and not self._replies.items and data.isascii():
                # Plain ASCII text (not "{"): its echo is the line itself,
                # sent here; _reply's batch case, for one line, in one frame.
                self.messages += 1
                self._host.answered(1)
                if self._log is not None:
                    self._log.line(_RECEIVED, line)
                self._send_now(data if len(line) + 1 == len(data) else line + b"\n")
                if self._out:  # the socket took only part
                    self._account()
                return
            self._reply((line,))
            self._send_corked()
            if self._out or self._replies.items:  # the socket took only part, or an op runs
                self._account()
                self._update_interest()
            return
        self._backlog = data
        self._backlog_pos = 0
        if self._account():  # the budget may refuse what arrived
            self.take_turn()

    def take_turn(self) -> None:
        """Answer up to one turn's share of the input held; ask for another if more is left."""
        if self.state is not _OPEN:
            return
        lines_left = self._host.turn_lines()
        bytes_left = _TURN_BYTES
        while lines_left and self._may_answer():
            lines, pos = self._lines, self._line_pos
            if pos < len(lines):
                done = self._reply(lines[pos : pos + lines_left])
                self._line_pos = pos + done
                lines_left -= done
                if self._corked_bytes >= _CORK_BYTES:
                    self._send_corked()
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
                # The whole lines before the offender are answered, all of
                # them (the cap does not apply: the connection ends here).
                self._lines = []
                lines = exc.lines
                while lines:
                    lines = lines[self._reply(lines) :]
                self._refuse_long_line(exc)
                return
            self._line_pos = 0
        if self._line_pos >= len(self._lines):
            self._lines = []
            self._line_pos = 0
        if self._backlog_pos >= len(self._backlog):
            self._backlog = b""
            self._backlog_pos = 0
        self._send_corked()
        if not self._account() or self.state is not State.OPEN:
            return
        self._want_input()
        self._update_interest()

    def _want_input(self) -> None:
        """While answering: ask for a turn if input waits, or for a flush if
        a partial line does (unless too many ops are in flight, or too many
        replies wait behind one: then the reply that frees room asks)."""
        if not self._may_answer():
            return
        if self._has_input():
            self._host.want_turn(self)
        elif self._settings.flush_after and self.framer.partial_bytes:
            self._host.want_flush(self)

    def on_writable(self) -> None:
        """Send more of the replies that were waiting for buffer space."""
        if not self._out or self.state is State.CLOSED:
            return
        if self._track_idle:
            # A client taking its replies is busy, not idle, even while the
            # server has stopped reading from it.
            self._host.active(self)
        if self._write_out():
            self._account()
            self._after_sent()

    def flush_idle(self) -> None:
        """Answer the unterminated line held by the framer as one message."""
        if not self._reading():
            # Not reading now (earlier input is still being answered, or too
            # many ops are in flight): the rest of the line may be unread in
            # the socket. The wait starts again once reading resumes.
            return
        if input_waiting(self.sock):
            # The deadline passed while the server was not running (a stall):
            # bytes that arrived meanwhile are read first, and they decide.
            self.on_readable()
            return
        line = self.framer.flush()
        if line is not None:
            self._reply((line,))
            self._send_corked()
            self._account()

    def close_idle(self) -> None:
        """Close after the server's ``idle_timeout`` without traffic; the log
        line says so, and what was lost."""
        note = f"; idle for {self._settings.idle_timeout:g} s"
        if self.framer.partial_bytes:
            note += f"; {plural(self.framer.partial_bytes, 'byte')} of an unfinished line dropped"
        unsent = self.unsent + queued_for_peer(self.sock)
        if unsent:
            note += f"; {plural(unsent, 'byte')} of replies not delivered"
        self.close(note)

    def refuse_overloaded(self, total: int, limit: int) -> None:
        """Refuse this connection to keep the server within its memory budget.

        With replies waiting unsent the client is not reading, so an error
        reply queued behind them would never arrive: it is closed at once.
        Otherwise it gets an ``overloaded`` error reply, then closes.
        """
        unread = self._buffered - self.unsent
        why = (
            f"input and replies held for all connections reached {plural(total, 'byte')} "
            f"(the limit is {limit}) and this connection held the most "
            f"({plural(unread, 'byte')} of unread input, "
            f"{plural(self.unsent, 'byte')} of unsent replies)"
        )
        self._log_error(f"{format_address(self.peer)} refused: {why}; closing the connection")
        if self._corked_bytes or self._out_bytes:
            self.close("; refused: the server's memory budget")
            return
        self._refuse(
            encode_error(
                OVERLOADED,
                f"the server holds too much for all its clients; this connection held "
                f"the most ({plural(unread, 'byte')}), so it is closed",
            )
        )

    def stop(self) -> None:
        """The server is stopping: no more input is answered; replies already
        made go out (``on_writable``), then the connection closes."""
        if self.state is State.CLOSED or self.state is State.AUTHENTICATING:
            self.close()  # nothing is owed to a connection that never authenticated
            return
        if self.state in ANSWERING:
            self.state = State.STOPPING
            self._discard_left = sys.maxsize
            self._drop_input()
        self._send_corked()
        if self.state is not State.CLOSED:
            self._after_sent()

    def close(self, note: str = "") -> None:
        """Close the socket now (idempotent) and log it. Ops still running
        for it are cancelled where they can be; their results are dropped."""
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self._corked = []
        self._out.clear()
        self._corked_bytes = self._out_bytes = 0
        for slot in self._replies.clear():  # (the shared empty queue has none)
            if slot.future is not None:
                slot.future.cancel()
            self._host.op_settled(slot)
        self._drop_input()
        self._host.forget(self)
        with contextlib.suppress(OSError):
            self.sock.close()
        if self._log is not None:
            count = plural(self.messages, "message")
            self._log(f"Connection closed: {format_address(self.peer)} ({count}{note})")

    # -- the one reply path ----------------------------------------------------
    def _reply(self, lines: Sequence[bytes]) -> int:
        """Answer lines in order: count, log, decide and encode each reply, and
        queue it. Stops after the reply that takes the unsent bytes past the
        output cap; returns how many lines it answered."""
        if not lines:
            return 0
        log = self._log
        joined = lines[0] if len(lines) == 1 else b"\n".join(lines)
        if _is_plain_ascii(joined):
            # The echo of ASCII text is the line itself: a whole batch is
            # counted, logged and queued in a few calls.
            count = len(lines)
            self.messages += count
            self._host.answered(count)
            if log is not None:
                if count == 1:
                    log.line(_RECEIVED, joined)
                else:
                    log.lines(_RECEIVED, lines, joined)
            self._queue(joined + b"\n")
            return count
        host = self._host
        last = len(lines)
        for done, line in enumerate(lines, 1):
            self.messages += 1
            host.answered(1)
            if log is not None:  # an auth line is logged without its token
                log.line(_RECEIVED, line if line.find(b'"token"') < 0 else hide_token(line))
            message = parse_message(line)
            if type(message) is Request:
                reply = self._call(message)
            elif type(message) is Text:  # valid UTF-8: echoed as it came
                reply = line + b"\n"
            else:
                reply = encode_error(message.code, message.message, message.id)
            if reply is not None:  # (None: its op runs off the loop, its place kept)
                # _queue()'s body, without its call on this per-line path.
                if self._replies.items:
                    self._replies.add(reply)
                else:
                    self._corked.append(reply)
                    self._corked_bytes += len(reply)
            # After the last line the caller looks for itself. With nothing
            # owed, _may_answer() is False only past the output cap.
            if (
                done < last
                and (self._replies.items or self._corked_bytes + self._out_bytes > _OUTPUT_CAP)
                and not self._may_answer()
            ):
                return done
        return last

    def _call(self, request: Request) -> bytes | None:
        """Run an inline op now and return its reply; start any other op
        where it runs and return None."""
        request_id = request.id
        spec = self._settings.find_op(request.op)
        if spec is None:
            if request.op == AUTH_OP:  # no op may take that name (see OpRegistry.add)
                return self._auth_again(request)
            try:
                spec = self._ops.get(request.op)  # unknown_op, naming the ops there are
            except ProtocolError as exc:
                return encode_error(exc.code, exc.message, request_id)
        ctx: OpContext = _tuple_new(OpContext, (self.peer, self.messages, self._host))
        if spec.runs_on is _LOOP:
            # run_op's work, with the common case in one frame (the op returns
            # JSON's own types, its reply encodes and fits). Anything else goes
            # run_op's way (failed_outcome, finish_op, _fit): an encoding that
            # failed, or a reply too big, is tried twice; the op never is.
            try:
                result = spec.func(Params(request.params), ctx)
            except BaseException as exc:  # the op's own: mapped below
                outcome = failed_outcome(spec.name, exc, request_id)
            else:
                if type(result) in _PLAIN_RESULTS:
                    try:
                        data = encode_result(result, request_id)
                    except BaseException:
                        data = None
                    if data is not None and len(data) <= self._settings.max_reply_bytes:
                        return data
                outcome = finish_op(spec.name, result, request_id)
            outcome = self._fit(spec.name, request_id, outcome)
            if outcome.failure is not None:
                self._log_op_failure(spec.name, request_id, outcome.failure, outcome.what)
            return outcome.data
        slot = Slot(spec.name, request_id, self._host.now(), spec.runs_on is RunsOn.WORKER)
        if self._replies is _NOTHING_OWED:
            self._replies = ReplyQueue()
        self._replies.reserve(slot)
        self._host.start_op(self, slot, spec, request.params, ctx)
        return None

    # -- replies of ops that ran off the loop ---------------------------------------
    def op_done(self, slot: Slot, outcome: Outcome | None) -> None:
        """The op of ``slot`` finished (``outcome`` None: it was cancelled):
        its reply takes its place, and what is complete at the head goes out."""
        if self.state is State.CLOSED:
            return  # the client left: nothing to send, nothing to log
        if outcome is None and slot.data is not None:
            return  # cancelled because it timed out: its caller has its answer
        if outcome is None:
            outcome = Outcome(
                encode_error(OP_FAILED, f"op {slot.op!r} was cancelled", slot.request_id)
            )
        outcome = self._fit(slot.op, slot.request_id, outcome)
        if not self._replies.fill(slot, outcome.data):
            elapsed = self._host.now() - slot.started
            self._log_error(
                f"{format_address(self.peer)}: op {slot.op!r}{_request(slot.request_id)} "
                f"finished after {elapsed:.1f} s, past its deadline; its result was dropped"
            )
            return
        self._host.op_settled(slot)
        if outcome.failure is not None:
            self._log_op_failure(slot.op, slot.request_id, outcome.failure, outcome.what)
        self._release()

    def _fit(self, op: str, request_id: Any, outcome: Outcome) -> Outcome:
        """The outcome, or an ``op_failed`` reply when its reply is bigger than
        the server's whole budget (it would be refused and cut mid-line)."""
        size = len(outcome.data)
        limit = self._settings.max_reply_bytes
        if size <= limit:
            return outcome
        message = (
            f"op {op!r} returned a reply of {size} bytes, more than the server holds "
            f"for all its clients ({limit} bytes, --max-buffered-bytes)"
        )
        too_big = ValueError(message)
        return Outcome(
            encode_error(OP_FAILED, message, request_id),
            too_big,
            "returned a reply too big to hold",
        )

    def op_timed_out(self, slot: Slot, seconds: float) -> None:
        """The op of ``slot`` ran past its deadline: ``op_timeout`` takes its place."""
        if self.state is State.CLOSED or slot.data is not None:
            return
        message = (
            f"op {slot.op!r} did not finish within {seconds:g} s "
            "(the server's op timeout); its result will be dropped"
        )
        self._replies.fill(slot, encode_error(OP_TIMEOUT, message, slot.request_id))
        self._host.op_settled(slot)
        self._log_error(
            f"{format_address(self.peer)}: op {slot.op!r}{_request(slot.request_id)} "
            f"timed out after {seconds:g} s"
        )
        self._release()

    def _release(self) -> None:
        """Send the replies now complete at the head of the queue, in order;
        then read again if the in-flight cap held reading back."""
        released = self._replies.release()
        if released:
            self._corked.extend(released)
            self._corked_bytes += sum(map(len, released))
            if self._track_idle:  # a reply is traffic: the client is not idle
                self._host.active(self)
        self._send_corked()
        if self.state is State.CLOSED:
            return
        if self._account() and self.state is _OPEN:
            self._want_input()
        self._after_sent()  # (does nothing if the budget refused and closed it)

    def _log_op_failure(
        self, op: str, request_id: Any, exc: BaseException, what: str = ""
    ) -> None:
        """One error line naming the op, the request id and the exception
        (then its traceback, when the server was asked for them)."""
        if self._error_log is None:
            return
        how = what or "failed"
        self._log_error(
            f"{format_address(self.peer)}: op {op!r} {how}{_request(request_id)}: {describe(exc)}"
        )
        if self._settings.op_tracebacks:
            try:
                text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            except BaseException:  # an exception whose __repr__ fails, too
                text = "(the traceback could not be formatted)"
            for line in text.splitlines():
                self._error_log(f"  {display_text(line, _ERROR_CHARS)}")

    def _log_error(self, text: str) -> None:
        if self._error_log is not None:  # else the operator never learns why
            self._error_log(f"Error: {display_text(text, _ERROR_CHARS)}")

    # -- output ------------------------------------------------------------------
    def _queue(self, data: bytes) -> None:
        if self._replies.items:  # an op's reply is owed first: wait behind it
            self._replies.add(data)
            return
        self._corked.append(data)
        self._corked_bytes += len(data)

    def _send_corked(self) -> None:
        """Hand the corked replies to the socket (behind any already waiting)."""
        if not self._corked:
            return
        corked = self._corked
        data = corked[0] if len(corked) == 1 else b"".join(corked)
        self._corked = []
        self._corked_bytes = 0
        if self._out:  # keep order behind replies already waiting
            self._out.append(data)
            self._out_bytes += len(data)
            self._check_output()
        else:
            self._send_now(data)

    def _send_now(self, data: bytes) -> None:
        """Send ``data`` (nothing waits unsent before it); keep what the socket refused."""
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent == len(data):
            return
        self._out.append(_rest(data, sent))
        self._out_bytes += len(data) - sent
        self._check_output()

    def _check_output(self) -> None:
        """Replies wait unsent: past the output cap, stop answering; watch for writable."""
        if self._out_bytes > _OUTPUT_CAP and self.state is State.OPEN:
            self.state = State.PAUSED
        self._update_interest()

    def _write_out(self) -> bool:
        """Send what the socket takes of the waiting replies; False if that closed it."""
        out = self._out
        while out:
            chunk = out[0]
            try:
                sent = self.sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return False
            self._out_bytes -= sent
            if sent < len(chunk):
                out[0] = _rest(chunk, sent)
                break
            out.popleft()
        return True

    def _after_sent(self) -> None:
        """Every reply so far is out (or below the low water mark): move on."""
        state = self.state
        if state is State.PAUSED and self._out_bytes <= _OUTPUT_RESUME:
            self.state = State.OPEN
            # Reading again: a held line's idle time starts now.
            self._want_input()
        elif state in _FINISHING and not self._out and not self._replies:
            if self._eof or (state is State.STOPPING and not self._unread_input()):
                # Nothing can come back as a reset to destroy the replies.
                self.close()
                return
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            self.state = State.LINGERING
            self._host.lingering(self)
        self._update_interest()

    # -- input ---------------------------------------------------------------------
    def _unread_input(self) -> bool:
        """True if the client's bytes wait unread in the socket (closing now
        would answer them with a reset); reads and drops what is there."""
        try:
            data = self.sock.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return False
        if not data:
            self._eof = True
            return False
        self._discard_left -= len(data)
        return True

    def _has_input(self) -> bool:
        """True while received input waits for a turn."""
        return self._backlog_pos < len(self._backlog) or self._line_pos < len(self._lines)

    def _may_answer(self) -> bool:
        """True while fewer than ``max_in_flight`` ops run for this connection
        and no more than the output cap of replies waits unsent."""
        return self._replies.in_flight < self._max_in_flight and self.unsent <= _OUTPUT_CAP

    def _reading(self) -> bool:
        """True while the connection takes more input from its socket."""
        return self.state is State.OPEN and not self._has_input() and self._may_answer()

    def _account(self) -> bool:
        """Tell the server what this connection holds now; False if that (or
        anything before) ended its answering."""
        buffered = (
            self.framer.partial_bytes
            + len(self._backlog)
            - self._backlog_pos
            + self._corked_bytes
            + self._out_bytes
            + self._replies.waiting_bytes
        )
        change = buffered - self._buffered
        if change:
            self._buffered = buffered
            self._host.buffered_changed(change)
        return self.state in ANSWERING

    def _drop_input(self) -> None:
        """Forget every byte of input held (refused, stopping or closing)."""
        self._backlog = b""
        self._backlog_pos = 0
        self._lines = []
        self._line_pos = 0
        if self.framer.partial_bytes:
            self.framer.flush()
        self._host.cancel_flush(self)
        self._account()

    def _end_of_stream(self) -> None:
        """The client closed its side: answer a final unterminated line, then
        close once the replies are out."""
        self._eof = True
        if self.state is State.AUTHENTICATING:
            self._end_before_auth()
            return
        # Reading happens only while OPEN with no input waiting, or LINGERING.
        if self.state is not State.OPEN:
            self.close()
            return
        self.state = State.DRAINING
        self._host.cancel_flush(self)
        line = self.framer.flush()
        if line is not None:
            self._reply((line,))
            self._send_corked()
        if self.state is not State.CLOSED:
            self._account()
            self._after_sent()

    # -- before the token is accepted (a server with a token) ------------------------
    def _before_auth(self, data: bytes) -> None:
        """Hold at most one short first line; judge it once whole. What came
        after it is input like any other, answered once the token is accepted."""
        assert self._gate is not None
        held = self._first + data if self._first else data
        end = held.find(b"\n", 0, MAX_AUTH_LINE_BYTES + 2)  # "\r\n" may end a full line
        if end < 0:
            if len(held) > MAX_AUTH_LINE_BYTES + 1:  # refused without holding it
                self._refuse_auth(*self._gate.too_long())
            else:
                self._first = held
            return
        self._first = b""
        line = held[: end - 1] if held[end - 1 : end] == b"\r" else held[:end]
        self._auth_line(line, held[end + 1 :])

    def _auth_line(self, line: bytes, rest: bytes) -> None:
        """Judge the first line: refuse the connection, or answer it and open it."""
        assert self._gate is not None
        reply, why = self._gate.check(line)
        if why:
            self._refuse_auth(reply, why)
            return
        self._gate.forget(self)
        self.state = State.OPEN
        self._queue(reply)
        self._send_corked()
        if self.state is State.CLOSED:
            return
        if rest:  # pipelined after the auth line
            self._backlog = rest
            self._backlog_pos = 0
            if self._account():
                self.take_turn()
        else:
            self._account()
            self._update_interest()

    def _end_before_auth(self) -> None:
        """End of stream before the token: a held first line is still one
        line, judged and answered; then the connection closes."""
        line, self._first = self._first, b""
        if not line:
            self.close()
            return
        self._auth_line(line[:-1] if line[-1:] == b"\r" else line, b"")
        if self.state is State.OPEN:
            self._end_of_stream()  # its reply is out: close

    def auth_timed_out(self) -> None:
        """The server's ``auth_timeout`` passed without a whole first line."""
        if self.state is not State.AUTHENTICATING:
            return
        if input_waiting(self.sock):
            # The deadline passed while the server was not running (a stall):
            # what arrived meanwhile is read first, and it decides.
            self.on_readable()
            if self.state is not State.AUTHENTICATING:
                return
        assert self._gate is not None
        self._first = b""
        self._refuse_auth(*self._gate.timed_out())

    def _refuse_auth(self, reply: bytes, why: str) -> None:
        """One ``unauthorized`` reply, then close; the gate logs and counts it."""
        assert self._gate is not None
        self._gate.forget(self)
        self._gate.failed(self.peer, why, self._host.now())
        self._refuse(reply)

    def _auth_again(self, request: Request) -> bytes:
        """``auth`` on a connection that already talks (or to a server with
        no token): checked and answered, and it closes nothing."""
        if self._gate is None:
            return no_token_needed(request)
        return self._gate.answer(request)[0]

    def _refuse_long_line(self, exc: LineTooLong) -> None:
        self._log_error(
            f"{format_address(self.peer)} sent a line longer than {exc.limit} bytes; "
            "closing the connection"
        )
        self._refuse(encode_error(exc.code, exc.message, exc.request_id))

    def _refuse(self, data: bytes) -> None:
        """Send a final error reply, then close (lingering first)."""
        self.state = State.REFUSING
        self._drop_input()
        self._queue(data)
        self._send_corked()
        if self.state is not State.CLOSED:
            self._account()
            if not self._out:
                self._after_sent()

    def _update_interest(self) -> None:
        """Tell the poller what to watch: writable while replies wait, readable
        while the connection may take more input."""
        state = self.state
        if state is State.CLOSED:
            return
        want = _WRITE if self._out else 0
        if state is State.LINGERING or state is State.AUTHENTICATING or self._reading():
            want |= _READ
        if want != self._interest:
            self._interest = want
            self._host.watch(self, want)


def _request(request_id: Any) -> str:
    """`` (request id 7)`` for a log line, or nothing when the request had no id."""
    if request_id is NO_ID:
        return ""
    try:
        return f" (request id {json.dumps(request_id)})"
    except Exception:
        return " (request id not shown)"
