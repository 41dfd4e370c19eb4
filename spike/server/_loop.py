"""The server loop: :class:`Server` owns the listening socket, the poller,
the turn queue, the timers and the ops that run off the loop;
:func:`running_server` runs one on a thread."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import heapq
import itertools
import math
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from .._address import check_port
from .._display import plural
from .._logwriter import CallableLog, EventLog, LogWriter
from ..errors import OP_FAILED, PipeError
from ..ops import OpContext, OpRegistry, OpSpec, default_ops, describe
from ..protocol import (
    DEFAULT_HOST,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_PORT,
    encode_error,
    format_address,
)
from ._auth import DEFAULT_AUTH_TIMEOUT, Gate, HidingLog
from ._connection import ANSWERING, Connection, Settings
from ._dispatch import Dispatcher, Outcome
from ._net import input_waiting, listen, queued_for_peer
from ._poller import READ as _READ
from ._poller import READY_READ as _READY_READ
from ._poller import READY_WRITE as _READY_WRITE
from ._poller import DefaultPoller, Poller
from ._replies import Slot

__all__ = [
    "DEFAULT_AUTH_TIMEOUT",
    "DEFAULT_BACKLOG",
    "DEFAULT_FLUSH_AFTER",
    "DEFAULT_MAX_BUFFERED_BYTES",
    "DEFAULT_MAX_IN_FLIGHT",
    "DEFAULT_OP_TIMEOUT",
    "DEFAULT_WORKERS",
    "Log",
    "Server",
    "running_server",
]

# Worker threads for plain `def` ops. Ops that wait (a database, a web API)
# need threads more than cores: ThreadPoolExecutor's min(32, cores + 4)
# gives 6 on a 2-core laptop, which would queue the 7th waiting call; 32
# matches that formula's ceiling (Starlette uses 40). Threads start only
# when ops need them, so an idle server holds none.
DEFAULT_WORKERS = 32
# How long an op may run before its caller gets `op_timeout`: longer than
# any honest database or web call, short enough that a hung op is noticed
# (AWS API Gateway's default integration timeout is 29 s).
DEFAULT_OP_TIMEOUT = 30.0
# A connection's requests whose ops may run at once; past it the connection
# is not read until replies come back. It bounds what one client can queue
# for the pool, and the replies it can have built at once (each op's reply
# size is unknown until it returns): half the pool, so one pipelining client
# leaves workers for everyone else.
DEFAULT_MAX_IN_FLIGHT = 16

DEFAULT_FLUSH_AFTER = 0.25
# The stdlib socketserver's backlog of 5 drops connections when 1,000 clients
# connect at once; the kernel caps this at its own maximum (somaxconn).
DEFAULT_BACKLOG = 4096
# What the server holds for all connections together (unread input: partial
# lines and bytes received but not answered yet; and replies not sent yet)
# before it refuses the biggest holders.
DEFAULT_MAX_BUFFERED_BYTES = 256 * 1024 * 1024
# A loop pass's share of messages (see Server.turn_lines()).
_PASS_LINES = 1024
_MIN_TURN_LINES = 8
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
# When the server stops, ops in flight finish and replies go out to clients
# that read them for at most this long; then every connection closes.
_STOP_DRAIN_SECONDS = 2.0

Log = Callable[[str], None]


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
    ``workers``: threads for plain ``def`` ops (started as needed).
    ``op_timeout``: seconds an op may run before its caller gets
    ``op_timeout`` (None: no limit). ``max_in_flight``: a connection's
    requests whose ops may run at once; past it the connection is not read
    until replies come back. Replies keep request order on each connection.
    ``max_buffered_bytes``: the most the server holds for all connections
    together, unread input (partial lines, bytes received but not answered)
    and unsent replies alike; past it the connections holding the most are
    refused (an ``overloaded`` error reply, or closed at once when their
    client is not reading its replies), until the total is back under seven
    eighths of it. ``backlog``: the listen queue length. ``log``: called
    with one line of text per event (None: silent); a
    :class:`~spike._logwriter.LogWriter` is used as it is, any other
    callable through :class:`~spike._logwriter.CallableLog`.
    ``error_log``: called instead of ``log`` for the lines that report
    errors (``"Error: ..."``: a refused client, a failed op, an over-long
    line), so errors can still be shown when ``log`` is None (default:
    ``log``). ``op_tracebacks``: after the error line that names a failed
    op, log its traceback too. ``token``: a connection's first line must be
    ``{"op": "auth", "token": ...}`` with this token, within
    ``auth_timeout`` seconds, else it gets ``unauthorized`` and is closed
    (None: no token; ``spike-server`` sets one whenever it listens beyond
    this computer; see :mod:`spike.server._auth`). ``clock``: the
    monotonic clock (seconds) every timer reads: idle timeout, flush-after,
    linger, the accept retry and the auth deadline (tests pass a fake one).
    ``poller``: what waits for sockets (default: this platform's, see
    :mod:`spike.server._poller`; tests pass each one).

    Methods for the caller:
        ``serve_forever(poll_interval)`` run the loop until stopped;
        ``shutdown()`` stop the loop (from any thread, or from an op);
        ``close()`` stop, let ops in flight finish and send the replies
        (for up to two seconds), then close every connection and the
        listener (also on leaving a ``with`` block); ``wait_serving(timeout)``
        wait until the loop runs; ``stats()`` the numbers the ``stats`` op
        reports (safe from any thread); ``post(callback)`` run a callback on
        the loop's thread (from any thread).
        Attributes: ``address`` (the bound host and port), ``uptime``,
        ``open_connections``, ``total_connections``, ``total_messages``,
        ``buffered_bytes`` (unread input and unsent replies, all connections).

    Methods for connections: the :class:`~spike.server._connection.ConnectionHost`
    interface (``turn_lines``, ``answered``, ``buffered_changed``,
    ``want_turn``, ``want_flush``, ``cancel_flush``, ``active``, ``watch``,
    ``lingering``, ``forget``, ``now``, ``start_op``, ``op_settled``). The
    server reads a connection's ``state``, ``buffered`` and ``in_flight``;
    neither class writes the other's attributes.

    ``log`` and ``error_log`` are called on the loop's thread, so they must
    not block: a :class:`~spike._logwriter.LogWriter` (what ``spike-server``
    uses) hands the lines to a thread of its own.

    To change what the server does, do not subclass it: pass ``ops``.
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
        op_tracebacks: bool = False,
        workers: int = DEFAULT_WORKERS,
        op_timeout: float | None = DEFAULT_OP_TIMEOUT,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        token: str | None = None,
        auth_timeout: float = DEFAULT_AUTH_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        poller: Poller | None = None,
    ) -> None:
        _check_settings(port, max_line_bytes, idle_timeout, flush_after, max_buffered_bytes)
        _check_op_settings(workers, op_timeout, max_in_flight)
        if not (auth_timeout > 0 and math.isfinite(auth_timeout)):
            raise ValueError("auth_timeout must be a positive number of seconds")
        self._gate: Gate[Connection] | None = (
            None if token is None else Gate(token, auth_timeout, self._log_error)
        )
        event_log = None if log is None else _event_log(log)
        errors = event_log if error_log is None else _event_log(error_log)
        if token is not None:  # the token never reaches a log
            event_log = None if event_log is None else HidingLog(event_log, token)
            errors = None if errors is None else HidingLog(errors, token)
        self._settings = Settings(
            ops=default_ops if ops is None else ops,
            max_line_bytes=max_line_bytes,
            idle_timeout=idle_timeout,
            flush_after=flush_after,
            log=event_log,
            error_log=errors,
            op_tracebacks=op_tracebacks,
            max_in_flight=max_in_flight,
            max_reply_bytes=max_buffered_bytes,
            gate=self._gate,
        )
        self.max_buffered_bytes = max_buffered_bytes
        self.op_timeout = op_timeout
        # Replies built by workers but not taken by the loop yet stay under
        # an eighth of the budget (at most 8 MiB): see WorkerPool.
        self._dispatcher = Dispatcher(workers, min(8 * 1024 * 1024, max_buffered_bytes // 8))
        # Ops running off the loop, each with its connection: what stats
        # count and what a stopping server names if they do not finish.
        self._ops_owed: dict[Slot, Connection] = {}
        self.op_timeouts = 0
        # Op deadlines: a heap, since each op may end at any time.
        self._op_due: list[tuple[float, int, Slot]] = []
        self._op_seq = itertools.count()
        # Callbacks from other threads (finished ops, mostly), run on the loop.
        self._inbox: collections.deque[Callable[[], None]] = collections.deque()
        self._woken = False
        self._interrupted = False
        self.total_connections = 0
        # Kept up to date as connections report, so stats cost the same with
        # ten connections or ten thousand.
        self.total_messages = 0
        self.buffered_bytes = 0
        self._enforcing = False
        self._connections: set[Connection] = set()
        # Connections with input left over from an earlier turn, in turn order.
        self._ready: collections.deque[Connection] = collections.deque()
        self._queued: set[Connection] = set()
        self._happened: list[tuple[int, int]] = []  # this loop pass's events
        # Deadlines are "now + a constant", so insertion order is deadline
        # order: the first entry is always the next one due.
        self._flush_due: collections.OrderedDict[Connection, float] = collections.OrderedDict()
        self._last_active: collections.OrderedDict[Connection, float] = collections.OrderedDict()
        self._unsent_seen: dict[Connection, int] = {}  # the kernel's unsent bytes at the last look
        self._linger_due: collections.OrderedDict[Connection, float] = collections.OrderedDict()
        self._clock = clock
        self._started = clock()
        self._listener = listen(host, port, backlog)
        self._listener_fd = self._listener.fileno()
        sockname = self._listener.getsockname()
        self._address = (sockname[0], sockname[1])
        self._poller: Poller = DefaultPoller() if poller is None else poller
        self._accept_resume_at: float | None = None
        self._pause_reason = ""
        # A socket pair lets other threads (post(), shutdown()) wake the loop.
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
        return self._clock() - self._started

    @property
    def open_connections(self) -> int:
        """Number of connected clients right now."""
        return len(self._connections)

    def stats(self) -> dict[str, int]:
        """Connection and op statistics (what the ``stats`` op reports).

        Safe to call from any thread, an op's included: it only reads counters.
        """
        return {
            "open_connections": len(self._connections),
            "total_connections": self.total_connections,
            "total_messages": self.total_messages,
            "ops_in_flight": len(self._ops_owed),
            "op_timeouts": self.op_timeouts,
            **self._dispatcher.stats(),
        }

    def post(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the loop's thread soon; safe from any thread.

        Like asyncio's ``call_soon_threadsafe``: the callback joins an inbox
        and one byte wakes the loop (one byte per batch, not per callback).
        """
        self._inbox.append(callback)
        if not self._woken:
            self._woken = True
            self._wake()

    def _wake(self) -> None:
        """Make the loop's wait return now (safe from any thread, and from a
        signal handler): one byte on the wake socket pair."""
        with contextlib.suppress(OSError):  # full of wake bytes already, or closed
            self._wake_w.send(b"x")

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
        ready = self._ready
        clock = self._clock
        poll, owners, wake_r = self._poller.poll, self._poller.owners, self._wake_r
        restore = self._catch_stop_signals()
        next_due: float | None = None
        try:
            while not self._stop_requested:
                if ready:  # input waits for its turn: look for events, do not sleep
                    timeout = 0.0
                elif next_due is None:
                    timeout = poll_interval
                else:
                    timeout = min(poll_interval, max(0.0, next_due - clock()))
                # What has arrived is read before any timer is judged: after a
                # stall (a loaded laptop, a resume from sleep) a deadline that
                # passed meanwhile must not split a line whose rest is here,
                # or call a client idle that has spoken (asyncio's order too).
                # _dispatch()'s body, inlined with its lookups made once: a
                # Python call less per pass is 0.2 us of a 10 us round trip.
                self._happened = happened = poll(timeout)
                for fd, events in happened:
                    conn = owners.get(fd)
                    if conn is None:
                        if fd == self._listener_fd and not self._closed:
                            self._accept()
                    elif conn is wake_r:
                        with contextlib.suppress(OSError):
                            conn.recv(4096)
                        self._run_inbox()
                    else:
                        try:
                            if events & _READY_READ:
                                conn.on_readable()
                            if events & _READY_WRITE:
                                conn.on_writable()
                        except Exception as exc:  # a bug must cost one client, not all
                            self._drop(conn, exc)
                if ready:
                    self._take_turns()
                # Is any timer scheduled? Asked here, not in a method, for the same reason.
                if (
                    self._flush_due
                    or self._last_active
                    or self._linger_due
                    or self._op_due
                    or self._accept_resume_at is not None
                    or (self._gate is not None and self._gate.waiting)
                ):
                    next_due = self._run_timers()
                else:
                    next_due = None
        finally:
            for signum, handler in restore:
                signal.signal(signum, handler)
            self._stop_requested = False
            self._serving.clear()
            self._loop_thread = None
            self._loop_done.set()
        if self._interrupted:
            self._interrupted = False
            raise KeyboardInterrupt

    def _catch_stop_signals(self) -> list[tuple[int, Any]]:
        """On the main thread, Ctrl+C (and SIGTERM, or Ctrl+Break on Windows,
        where they raise KeyboardInterrupt) stop the loop between two events
        instead of interrupting it anywhere: an op on the loop never sees
        the user's KeyboardInterrupt (one it raises itself is its own bug).
        :meth:`serve_forever` then raises KeyboardInterrupt, as before.
        Returns the handlers to put back."""
        if threading.current_thread() is not threading.main_thread():
            return []
        names = ("SIGINT", "SIGBREAK" if sys.platform == "win32" else "SIGTERM")
        restore = []
        for name in names:
            signum = getattr(signal, name, None)
            if signum is None or signal.getsignal(signum) is not signal.default_int_handler:
                continue
            restore.append((signum, signal.signal(signum, self._on_stop_signal)))
        return restore

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._interrupted = True
        self._stop_requested = True
        self._wake()

    def wait_serving(self, timeout: float | None = None) -> bool:
        """Block until :meth:`serve_forever` is running; False on timeout."""
        return self._serving.wait(timeout)

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and return once it has stopped.

        Safe to call from any thread, and from inside an op (then it returns
        at once and the loop stops after the current pass: waiting would
        deadlock, since a stopping server waits for that op).
        """
        self._stop_requested = True
        self._wake()
        if (
            self._loop_thread is not None
            and self._loop_thread != threading.get_ident()
            and not self._dispatcher.off_loop_thread()
        ):
            self._loop_done.wait()

    def close(self, drain: float = _STOP_DRAIN_SECONDS) -> None:
        """Stop serving if needed; let ops in flight finish and send the
        replies to clients that read them (for at most ``drain`` seconds; ops
        still running then are named in one log line); close every
        connection and the listener."""
        if self._closed:
            return
        self.shutdown()
        self._closed = True
        self._ready.clear()
        self._queued.clear()
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._poller.unregister(self._listener)
        self._listener.close()
        self._drain(drain)
        self._name_unfinished_ops()
        for conn in list(self._connections):
            conn.close()
        self._dispatcher.close()
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
    def _dispatch(self, timeout: float) -> None:
        """Wait up to ``timeout`` for events and hand each to its owner
        (serve_forever() runs the same steps inlined)."""
        # Kept for turn_lines(): who may want a share of this pass.
        self._happened = happened = self._poller.poll(timeout)
        owners = self._poller.owners
        for fd, events in happened:
            conn = owners.get(fd)
            if conn is None:
                if fd == self._listener_fd and not self._closed:
                    self._accept()
                # else: closed earlier in this pass; nothing to do
            elif conn is self._wake_r:
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                self._run_inbox()
            else:
                try:
                    if events & _READY_READ:
                        conn.on_readable()
                    if events & _READY_WRITE:
                        conn.on_writable()
                except Exception as exc:  # a bug must cost one client, not all
                    self._drop(conn, exc)

    def _run_inbox(self) -> None:
        """Run what other threads posted (finished ops, mostly), in order."""
        self._woken = False  # first: a callback posted from now on wakes us again
        inbox = self._inbox
        while inbox:
            callback = inbox.popleft()
            try:
                callback()
            except Exception as exc:  # a bug must cost one reply, not the loop
                self._log_error(f"Error: a posted callback failed: {type(exc).__name__}: {exc}")

    def _name_unfinished_ops(self) -> None:
        """One log line naming the ops a stopping server could not wait for."""
        if not self._ops_owed:
            return
        now = self._clock()
        slots = sorted(self._ops_owed, key=lambda slot: slot.started)
        named = ", ".join(f"{slot.op!r} ({now - slot.started:.1f} s)" for slot in slots[:5])
        more = f" and {len(slots) - 5} more" if len(slots) > 5 else ""
        self._log_error(
            f"Error: stopped with {plural(len(slots), 'op')} still running, "
            f"their replies not sent: {named}{more}"
        )

    def _drain(self, seconds: float) -> None:
        """Stopping: no more input is answered; ops in flight finish and
        replies go out to clients that read them, until all are out or
        ``seconds`` pass."""
        for conn in list(self._connections):
            try:
                conn.stop()
            except Exception as exc:
                self._drop(conn, exc)
        # Real time, not the server's clock: a bounded wait, not a timer.
        deadline = time.monotonic() + seconds
        while self._connections:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._dispatch(min(remaining, 0.05))

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
            if self._pause_reason:
                self._pause_reason = ""
                self._log_error("Accepting new connections again")
            if self._gate is not None and self._gate.turn_away(sock, peer, self._clock()):
                continue  # an address that keeps failing the token
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self, sock, peer, self._settings)
            self._connections.add(conn)
            self.total_connections += 1
            self._poller.register(sock, _READ, conn)
            if self._settings.idle_timeout is not None:
                self.active(conn)
            if self._settings.log is not None:
                self._settings.log(f"Connection opened: {format_address(peer)}")

    def _pause_accepting(self, reason: str) -> None:
        """Stop watching the listener for a moment; queued clients wait in the backlog.

        Logged once when an episode starts (not at every retry), and once
        when a connection is accepted again.
        """
        if not self._pause_reason:
            self._log_error(f"Error: {reason}; new connections wait")
        self._pause_reason = reason
        self._poller.unregister(self._listener)
        self._accept_resume_at = self._clock() + _ACCEPT_RETRY_DELAY

    def _log_error(self, line: str) -> None:
        error_log = self._settings.error_log
        if error_log is not None:
            error_log(line)

    def _drop(self, conn: Connection, exc: Exception) -> None:
        """Close a connection whose handling raised, and say why."""
        error_log = self._settings.error_log
        if error_log is not None:
            error_log(
                f"Error: closing {format_address(conn.peer)} after {type(exc).__name__}: {exc}"
            )
        with contextlib.suppress(Exception):
            conn.close()
        # Whatever close() did not get to, the server must still let go of.
        self.forget(conn)
        with contextlib.suppress(OSError):
            conn.sock.close()

    def _take_turns(self) -> None:
        """One more turn for every connection that has input left over, in order."""
        ready = self._ready
        queued = self._queued
        for _ in range(len(ready)):
            conn = ready.popleft()
            queued.discard(conn)
            try:
                conn.take_turn()
            except Exception as exc:  # a bug must cost one client, not all
                self._drop(conn, exc)

    def _enforce_budget(self) -> None:
        """Refuse the connections holding the most until the total is back
        under seven eighths of the budget.

        Pausing them instead would not free anything: a client that never
        ends its line, or never reads its replies, keeps its bytes held for
        as long as it likes. Refusing frees the memory at once and says why.
        Going below the limit (not just to it) makes the sort here rare:
        each one frees at least an eighth of the budget.
        """
        limit = self.max_buffered_bytes
        total = self.buffered_bytes
        target = limit - limit // 8
        holders = sorted(
            (conn for conn in self._connections if conn.buffered and conn.state in ANSWERING),
            key=_buffered,
            reverse=True,
        )
        self._enforcing = True
        try:
            for conn in holders:
                if self.buffered_bytes <= target:
                    break
                conn.refuse_overloaded(total, limit)
        finally:
            self._enforcing = False

    # -- for connections (the ConnectionHost interface) --------------------------
    def turn_lines(self) -> int:
        """How many lines a connection may answer in this turn.

        The messages of one loop pass (``_PASS_LINES``) are shared among the
        connections that may want a turn in it, never fewer than
        ``_MIN_TURN_LINES`` each: a client that sends thousands of tiny lines
        at once cannot hold the loop while everyone else waits, and a client
        alone still answers in large, cheap batches.
        """
        busy = len(self._happened) + len(self._ready)
        return _PASS_LINES if busy < 2 else max(_MIN_TURN_LINES, _PASS_LINES // busy)

    def answered(self, count: int) -> None:
        """A connection answered ``count`` more messages."""
        self.total_messages += count

    def buffered_changed(self, change: int) -> None:
        """A connection holds ``change`` more (or fewer) bytes; keep the budget."""
        self.buffered_bytes += change
        if change > 0 and self.buffered_bytes > self.max_buffered_bytes and not self._enforcing:
            self._enforce_budget()

    def want_turn(self, conn: Connection) -> None:
        """Give ``conn`` another turn after everyone already waiting."""
        if conn not in self._queued:
            self._queued.add(conn)
            self._ready.append(conn)

    def want_flush(self, conn: Connection) -> None:
        """Answer ``conn``'s partial line once it has sat ``flush_after`` seconds."""
        self._flush_due[conn] = self._clock() + self._settings.flush_after
        self._flush_due.move_to_end(conn)

    def cancel_flush(self, conn: Connection) -> None:
        """Forget a scheduled flush (new bytes arrived, or the connection stops reading)."""
        self._flush_due.pop(conn, None)

    def active(self, conn: Connection) -> None:
        """Bytes moved on ``conn``: its idle time starts again now."""
        self._last_active[conn] = self._clock()
        self._last_active.move_to_end(conn)

    def watch(self, conn: Connection, events: int) -> None:
        """Watch ``conn``'s socket for ``events`` (READ, WRITE, both or 0) from now on."""
        self._poller.modify(conn.sock, events)

    def lingering(self, conn: Connection) -> None:
        """Close ``conn`` after ``_LINGER_SECONDS`` of reading and dropping input."""
        self._linger_due[conn] = self._clock() + _LINGER_SECONDS

    def now(self) -> float:
        """The server's clock."""
        return self._clock()

    def start_op(
        self, conn: Connection, slot: Slot, spec: OpSpec, params: dict[str, Any], ctx: OpContext
    ) -> None:
        """Run ``spec`` off the loop; its outcome is posted back to ``conn``."""

        def done(future: concurrent.futures.Future[Outcome]) -> None:
            # On the thread where the op finished: only hand over.
            self.post(lambda: self._op_finished(conn, slot, future))

        self._ops_owed[slot] = conn
        if self.op_timeout is not None:
            due = slot.started + self.op_timeout
            heapq.heappush(self._op_due, (due, next(self._op_seq), slot))
        try:
            slot.future = self._dispatcher.start(spec, params, ctx, slot.request_id, done)
        except RuntimeError:  # the pool is closed: the server is stopping
            conn.op_done(slot, None)

    def _op_finished(
        self, conn: Connection, slot: Slot, future: concurrent.futures.Future[Outcome]
    ) -> None:
        outcome: Outcome | None = None
        if not future.cancelled():
            error = future.exception()
            if error is None:
                outcome = future.result()
                if slot.on_worker:  # the pool counted it until the loop took it
                    self._dispatcher.pool.claimed(len(outcome.data))
            else:  # not the op's doing (run_op catches all it raises): still one reply
                message = f"op {slot.op!r} could not be run: {describe(error)}"
                outcome = Outcome(encode_error(OP_FAILED, message, slot.request_id), error)
        try:
            conn.op_done(slot, outcome)
        except Exception as exc:  # a bug must cost one client, not all
            self._drop(conn, exc)

    def op_settled(self, slot: Slot) -> None:
        """``slot`` has its reply, or its connection closed: no longer owed."""
        owed = self._ops_owed
        owed.pop(slot, None)
        due = self._op_due
        if len(due) > 64 and len(due) > 2 * len(owed):
            # Deadlines of answered ops are dropped lazily as they come due;
            # when they outnumber the live ones, drop them all at once.
            due[:] = [entry for entry in due if entry[2] in owed]
            heapq.heapify(due)

    def forget(self, conn: Connection) -> None:
        """Drop a closed connection from the poller and every table."""
        if conn in self._connections:
            # A clean close has reported its buffered bytes as 0 already; a close cut
            # short by a bug (see _drop) has not, and the budget must not keep it.
            self.buffered_bytes -= conn.buffered
            self._connections.remove(conn)
        self._queued.discard(conn)
        self._flush_due.pop(conn, None)
        self._last_active.pop(conn, None)
        self._unsent_seen.pop(conn, None)
        self._linger_due.pop(conn, None)
        if self._gate is not None:
            self._gate.forget(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._poller.unregister(conn.sock)

    # -- timers ------------------------------------------------------------------
    def _run_timers(self) -> float | None:
        """Run what is due (flushes, idle closes, lingers, op deadlines, accept
        retry); return when the next is due (None: nothing is scheduled).

        Called only after the loop has read what arrived, and each timer
        checks again when it fires: a line whose rest is waiting is not
        flushed, a client whose bytes are waiting is not idle.
        """
        now = self._clock()
        next_due = math.inf
        flush_due = self._flush_due
        while flush_due:
            conn, due = next(iter(flush_due.items()))
            if due > now:
                next_due = min(next_due, due)
                break
            del flush_due[conn]
            try:
                conn.flush_idle()
            except Exception as exc:
                self._drop(conn, exc)
        idle_timeout = self._settings.idle_timeout
        last_active = self._last_active
        while last_active and idle_timeout is not None:
            conn, since = next(iter(last_active.items()))
            due = since + idle_timeout
            if due > now:
                next_due = min(next_due, due)
                break
            if conn.in_flight or input_waiting(conn.sock):
                # Waiting on its own ops is not idle; nor is a client whose
                # bytes arrived while the loop was busy (they are read next).
                self.active(conn)
                continue
            queued = queued_for_peer(conn.sock)
            if queued != self._unsent_seen.get(conn, 0):
                # Replies the server handed over have left the kernel since
                # the last look: the client is reading, just slowly.
                self._unsent_seen[conn] = queued
                self.active(conn)
                continue
            conn.close_idle()
        linger_due = self._linger_due
        while linger_due:
            conn, due = next(iter(linger_due.items()))
            if due > now:
                next_due = min(next_due, due)
                break
            conn.close()
        op_due = self._op_due
        while op_due:
            due, _, slot = op_due[0]
            if due > now:
                next_due = min(next_due, due)
                break
            heapq.heappop(op_due)
            owner = self._ops_owed.get(slot)
            if owner is None:  # answered, or its client left
                continue
            self.op_timeouts += 1
            if slot.future is not None:
                slot.future.cancel()  # an async op stops; a thread runs on
            try:
                owner.op_timed_out(slot, due - slot.started)
            except Exception as exc:
                self._drop(owner, exc)
        if self._gate is not None:  # auth deadlines
            next_due = min(next_due, self._gate.expire(now, self._drop))
        if self._accept_resume_at is not None:
            if self._accept_resume_at <= now:
                self._accept_resume_at = None
                self._poller.register(self._listener, _READ, None)
            else:
                next_due = min(next_due, self._accept_resume_at)
        return None if next_due == math.inf else next_due


def _buffered(conn: Connection) -> int:
    return conn.buffered


def _event_log(log: Log) -> EventLog:
    """The one log interface for any log callable: a LogWriter never blocks
    or raises and formats client lines on its own thread; anything else is
    wrapped so that a failing log (a closed stdout) can never stop the server."""
    return log if isinstance(log, LogWriter) else CallableLog(log)


def _check_op_settings(workers: int, op_timeout: float | None, max_in_flight: int) -> None:
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, not {workers!r}")
    if op_timeout is not None and not (op_timeout > 0 and math.isfinite(op_timeout)):
        raise ValueError("op_timeout must be a positive number of seconds (or None: no limit)")
    if not isinstance(max_in_flight, int) or max_in_flight < 1:
        raise ValueError(f"max_in_flight must be a positive integer, not {max_in_flight!r}")


def _check_settings(
    port: int,
    max_line_bytes: int,
    idle_timeout: float | None,
    flush_after: float,
    max_buffered_bytes: int,
) -> None:
    check_port(port)
    if max_line_bytes < 1:
        raise ValueError("max_line_bytes must be at least 1")
    if idle_timeout is not None and idle_timeout <= 0:
        raise ValueError("idle_timeout must be positive (or None for no timeout)")
    if flush_after < 0:
        raise ValueError("flush_after must be 0 (off) or positive")
    if max_buffered_bytes < 1:
        raise ValueError("max_buffered_bytes must be at least 1")


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
