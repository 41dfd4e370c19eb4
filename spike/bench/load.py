"""Client-side measurement loops for the benchmark.

Every loop here runs in the benchmark's own process against a server in
another process and returns raw observations (latencies in nanoseconds,
elapsed seconds, error counts); ``spike.bench.plan`` turns them into figures.
The same loop drives every server of a kind, so differences between rows
come from the servers, not from the client code.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import http.client
import json
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from spike import Client

_RECV = 1 << 16
_clock = time.perf_counter_ns
_Reply = TypeVar("_Reply")


class LoadError(RuntimeError):
    """A measurement could not complete: wrong reply, closed connection, timeout."""


@dataclass
class Timed:
    """Per-request latencies (ns) and the wall time of the whole batch (s)."""

    latencies_ns: list[int]
    elapsed_s: float
    errors: int = 0


@contextlib.contextmanager
def _quiet_gc() -> Iterator[None]:
    # A collection in the middle of a timed loop is client noise, not server cost.
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    """A blocking TCP connection with Nagle off, as every row's client uses."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_line(sock: socket.socket, first: bytes = b"") -> bytes:
    data = first
    while not data.endswith(b"\n"):
        chunk = sock.recv(_RECV)
        if not chunk:
            raise LoadError("server closed the connection mid-reply")
        data += chunk
    return data


def _timed_calls(
    call: Callable[[int], _Reply],
    is_echo: Callable[[int, _Reply], bool],
    count: int,
    warmup: int,
    what: str,
) -> Timed:
    """The timed loop every round-trip measurement shares.

    ``call(i)`` sends request ``i`` and returns its reply; ``is_echo(i, reply)``
    says whether the reply is right. ``warmup`` untimed calls (numbered -1,
    -2, ...) must all be right; then ``count`` calls are timed one by one,
    with the garbage collector held off, and wrong replies are counted (any
    is an error of the batch). ``what`` names the client in error messages.
    """
    for i in range(-1, -1 - warmup, -1):
        reply = call(i)
        if not is_echo(i, reply):
            raise LoadError(
                f"{what} got a reply that is not the echo of the request: {reply!r:.200}"
            )
    latencies = [0] * count
    wrong = 0
    with _quiet_gc():
        start = _clock()
        for i in range(count):
            t0 = _clock()
            reply = call(i)
            latencies[i] = _clock() - t0
            wrong += not is_echo(i, reply)
        elapsed = (_clock() - start) / 1e9
    if wrong:
        raise LoadError(f"{wrong} {what} replies were not the echo of the request")
    return Timed(latencies, elapsed)


def text_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """Sends ``text`` as one line ``count`` times, waiting for each echo."""
    line = text.encode() + b"\n"
    with connect(host, port) as sock:
        send, recv = sock.sendall, sock.recv

        def call(_: int) -> bytes:
            send(line)
            reply = recv(_RECV)
            return reply if reply.endswith(b"\n") else _read_line(sock, reply)

        return _timed_calls(call, lambda _, reply: reply == line, count, warmup, "text")


def json_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """JSON echo requests with a fresh id each, encoded and decoded every time.

    The client does what a real caller must: build the request with
    ``json.dumps``, parse the reply with ``json.loads`` and check the id, so
    the figure is the cost of one JSON call end to end, not of the server alone.
    """
    dumps, loads = json.dumps, json.loads
    with connect(host, port) as sock:
        send, recv = sock.sendall, sock.recv

        def call(i: int) -> dict[str, Any]:
            send(dumps({"op": "echo", "text": text, "id": i}).encode() + b"\n")
            reply = recv(_RECV)
            if not reply.endswith(b"\n"):
                reply = _read_line(sock, reply)
            parsed: dict[str, Any] = loads(reply)
            return parsed

        def is_echo(i: int, reply: dict[str, Any]) -> bool:
            result = reply.get("result") or {}
            return reply.get("id") == i and bool(reply.get("ok")) and result.get("text") == text

        return _timed_calls(call, is_echo, count, warmup, "JSON")


def client_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """JSON echo requests through the spike's own :class:`spike.Client`, as a user sends them."""
    with Client(host, port, timeout=10) as client:
        request = client.request
        return _timed_calls(
            lambda _: request("echo", text=text),
            lambda _, result: result.get("text") == text,
            count,
            warmup,
            "spike.Client",
        )


def http_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """POSTs ``text`` on one kept-alive ``http.client`` connection (Nagle off)."""
    body = text.encode()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    conn = http.client.HTTPConnection(host, port, timeout=10)

    def call(_: int) -> bytes:
        conn.request("POST", "/echo", body=body, headers=headers)
        return conn.getresponse().read()

    try:
        return _timed_calls(call, lambda _, reply: reply == body, count, warmup, "HTTP")
    finally:
        conn.close()


def zmq_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """REQ/REP round trips with pyzmq: send one message, wait for its reply."""
    import zmq  # noqa: PLC0415  (optional: the 'bench' extra)

    body = text.encode()
    context = zmq.Context()
    request = context.socket(zmq.REQ)
    request.setsockopt(zmq.LINGER, 0)
    request.setsockopt(zmq.RCVTIMEO, 10_000)
    request.connect(f"tcp://{host}:{port}")
    send, recv = request.send, request.recv

    def call(_: int) -> bytes:
        send(body)
        reply: bytes = recv()
        return reply

    try:
        return _timed_calls(call, lambda _, reply: reply == body, count, warmup, "ZeroMQ")
    except zmq.Again as exc:
        raise LoadError("ZeroMQ reply timed out") from exc
    finally:
        request.close()
        context.term()


class _Writer:
    """Sends ``chunks`` on a thread while the caller reads the replies.

    A server that answers as it reads would otherwise fill both socket
    buffers and stall, with this process still writing.
    """

    def __init__(self, sock: socket.socket, chunks: Sequence[bytes]) -> None:
        self._failure: OSError | None = None
        self._thread = threading.Thread(
            target=self._send, args=(sock, chunks), name="bench-writer", daemon=True
        )

    def _send(self, sock: socket.socket, chunks: Sequence[bytes]) -> None:
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError as exc:
            self._failure = exc

    def start(self) -> None:
        self._thread.start()

    def finish(self, timeout: float) -> None:
        """Waits for the thread; raises :class:`LoadError` if a send failed."""
        self._thread.join(timeout=timeout)
        if self._failure is not None:
            raise LoadError(f"writer failed: {self._failure}")


def pipelined(host: str, port: int, text: str, count: int, batch: int = 256) -> float:
    """Streams ``count`` lines on one connection while reading the replies.

    A writer thread sends lines in batches without waiting; this thread counts
    reply lines. Returns the seconds from the first send to the last reply.
    """
    line = text.encode() + b"\n"
    full, rest = divmod(count, batch)
    chunks = [line * batch] * full + ([line * rest] if rest else [])
    with connect(host, port, timeout=30) as sock:
        writer = _Writer(sock, chunks)
        seen = 0
        with _quiet_gc():
            start = _clock()
            writer.start()
            while seen < count:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise LoadError(
                        f"server closed the connection after {seen} of {count} replies"
                    )
                seen += chunk.count(b"\n")
            elapsed = (_clock() - start) / 1e9
        writer.finish(timeout=30)
    if seen != count:
        raise LoadError(f"got {seen} replies for {count} messages")
    return elapsed


def big_message(host: str, port: int, size: int) -> float:
    """Sends one line of ``size`` bytes (a writer thread) and reads its echo; returns seconds."""
    line = b"x" * size + b"\n"
    with connect(host, port, timeout=60) as sock:
        writer = _Writer(sock, [line])
        parts: list[bytes] = []
        received = 0
        start = _clock()
        writer.start()
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise LoadError(
                    f"server closed the connection after {received} of {len(line)} bytes"
                )
            parts.append(chunk)
            received += len(chunk)
            if chunk.endswith(b"\n"):
                break
        elapsed = (_clock() - start) / 1e9
        writer.finish(timeout=60)
    reply = b"".join(parts)
    if reply != line:
        raise LoadError(
            f"the echo of the {size}-byte message came back as {len(reply)} different bytes"
        )
    return elapsed


def max_select_sockets() -> int | None:
    """How many sockets one selector can watch here, when that is limited.

    On Windows ``selectors`` falls back to ``select()``, which CPython builds
    for at most 512 sockets.
    """
    return 500 if sys.platform == "win32" else None


class _Conn:
    __slots__ = ("buffer", "connecting", "left", "outgoing", "sent_at", "sock")

    def __init__(self, sock: socket.socket, requests: int) -> None:
        self.sock = sock
        self.left = requests  # round trips still to do; 0 once done or given up
        self.sent_at = 0  # when the pending request's clock started, in _clock() ns
        self.buffer = b""
        self.outgoing = b""
        self.connecting = True


_IN_PROGRESS = {
    0,
    errno.EINPROGRESS,
    errno.EWOULDBLOCK,
    errno.EAGAIN,
    getattr(errno, "WSAEWOULDBLOCK", -1),
}


def many_connections(
    host: str,
    port: int,
    text: str,
    connections: int,
    requests_each: int,
    timeout_s: float = 60.0,
    *,
    reply: str | None = None,
) -> Timed:
    """Opens ``connections`` sockets, then runs ``requests_each`` round trips on each, all at once.

    One thread drives every socket with ``selectors`` (a thousand client
    threads would measure the client's scheduler instead of the server).
    Each connection sends ``text`` as a line, waits for its reply (``reply``,
    or by default the echo of ``text``), and sends the next.
    Connections are all open before the clock starts; a refused or reset
    connection, a wrong reply or a request unanswered after ``timeout_s``
    counts as one error. Latencies are per request; the elapsed time runs
    from the first send to the last reply.
    """
    with _Crowd(text, reply, timeout_s) as crowd:
        crowd.connect_all(host, port, connections, requests_each)
        return crowd.timed(crowd.round_trips())


def arrivals(
    host: str,
    port: int,
    text: str,
    clients: int,
    timeout_s: float = 60.0,
    *,
    reply: str | None = None,
) -> Timed:
    """``clients`` clients arrive at once: each connects, sends ``text`` as a line, reads a reply.

    Unlike :func:`many_connections`, connecting is timed: what a server does
    for a new connection (accept it, start a thread for it) is in the figure.
    The elapsed time runs from the first connect to the last reply; each
    latency from its client's connect to its reply, after which the client
    closes its socket. Every connect is started in one burst, then one
    selector drives every socket. A refused, reset or closed connection, a
    wrong reply (``reply``, by default the echo of ``text``) or a client
    unanswered after ``timeout_s`` counts as one error.
    """
    with _Crowd(text, reply, timeout_s) as crowd:
        return crowd.timed(crowd.arrive(host, port, clients))


class _Crowd:
    """The sockets of :func:`many_connections` or :func:`arrivals`: one selector, one deadline."""

    def __init__(self, text: str, reply: str | None, timeout_s: float) -> None:
        """Each socket sends ``text`` as a line and expects ``reply`` (by
        default the echo of ``text``) within ``timeout_s`` of now."""
        self.line = text.encode() + b"\n"
        self.expected = self.line if reply is None else reply.encode() + b"\n"
        self.deadline = time.monotonic() + timeout_s
        self.selector = selectors.DefaultSelector()
        self.conns: list[_Conn] = []
        self.errors = 0
        self.remaining = 0  # round trips still owed by live connections
        self.latencies: list[int] = []
        self.last = 0  # when the latest reply came, in _clock() ns
        self.leave = False  # close each socket once answered (arrivals)

    def _waiting(self) -> bool:
        return time.monotonic() < self.deadline

    def _events(self) -> list[tuple[selectors.SelectorKey, int]]:
        return self.selector.select(timeout=max(0.0, self.deadline - time.monotonic()))

    def _open(self, host: str, port: int, requests: int) -> _Conn | None:
        """Starts one connection, watched until writable (connected or failed).

        Returns ``None``, with an error counted, when it fails at once. Its
        ``sent_at`` is when the connect started, where an arrival's latency begins.
        """
        started = _clock()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if sock.connect_ex((host, port)) not in _IN_PROGRESS:
            sock.close()
            self.errors += 1
            return None
        conn = _Conn(sock, requests)
        conn.sent_at = started
        self.selector.register(sock, selectors.EVENT_WRITE, conn)
        self.conns.append(conn)
        return conn

    # many_connections, phase 1: connect everything (not timed).

    def connect_all(self, host: str, port: int, connections: int, requests_each: int) -> None:
        """Starts every connection, then waits (until the deadline) for each to finish or fail."""
        for _ in range(connections):
            self._open(host, port, requests_each)
        connecting = len(self.conns)
        while connecting and self._waiting():
            for key, _ in self._events():
                self.selector.unregister(key.fileobj)
                connecting -= 1
                key.data.connecting = False
                if key.data.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self._fail(key.data)
        for key in list(self.selector.get_map().values()):  # still not connected at the deadline
            self.selector.unregister(key.fileobj)
            self._fail(key.data)

    def _fail(self, conn: _Conn) -> None:
        conn.left = 0
        self.errors += 1

    # many_connections, phase 2: every live connection does its round trips; timed.

    def round_trips(self) -> float:
        """Runs the round trips of every connected socket; returns first send to last reply, s."""
        live = [conn for conn in self.conns if conn.left]
        self.remaining = sum(conn.left for conn in live)
        with _quiet_gc():
            start = self.last = _clock()
            for conn in live:
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
                self._send_next(conn)
            return self._until_answered(start)

    # arrivals: connecting, sending and reading in one timed phase.

    def arrive(self, host: str, port: int, clients: int) -> float:
        """Connects ``clients`` sockets, each sending its line once connected; timed, s."""
        self.remaining = clients
        self.leave = True
        with _quiet_gc():
            start = self.last = _clock()
            for _ in range(clients):
                if self._open(host, port, 1) is None:
                    self.remaining -= 1
            return self._until_answered(start)

    def _until_answered(self, start: int) -> float:
        while self.remaining and self._waiting():
            for key, mask in self._events():
                self._on_event(key.data, mask)
        self.errors += self.remaining  # unanswered at the deadline
        return (self.last - start) / 1e9

    def _connected(self, conn: _Conn) -> None:
        # Writable after a non-blocking connect: connected, or failed (SO_ERROR says).
        conn.connecting = False
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            self._give_up(conn)
            return
        conn.outgoing = self.line
        if self._write(conn):
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.outgoing else 0)
            self.selector.modify(conn.sock, events, conn)

    def _on_event(self, conn: _Conn, mask: int) -> None:
        if conn.connecting:
            self._connected(conn)
            return
        if mask & selectors.EVENT_WRITE and conn.outgoing:
            if not self._write(conn):
                return
            if not conn.outgoing:
                self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        if not mask & selectors.EVENT_READ:
            return
        try:
            chunk = conn.sock.recv(_RECV)
        except OSError:
            chunk = b""
        if not chunk:
            self._give_up(conn)
            return
        conn.buffer += chunk
        if conn.buffer.endswith(b"\n"):
            self._answered(conn)

    def _answered(self, conn: _Conn) -> None:
        self.last = _clock()
        self.latencies.append(self.last - conn.sent_at)
        self.errors += conn.buffer != self.expected
        conn.buffer = b""
        conn.left -= 1
        self.remaining -= 1
        if conn.left:
            self._send_next(conn)
        else:
            self.selector.unregister(conn.sock)
            if self.leave:
                conn.sock.close()  # the server's cost of a client leaving is timed too

    def _send_next(self, conn: _Conn) -> None:
        conn.sent_at = _clock()
        conn.outgoing = self.line
        if self._write(conn) and conn.outgoing:
            # The kernel took part of it: finish when writable.
            self.selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def _write(self, conn: _Conn) -> bool:
        """Sends what the connection still owes; gives up on it (False) when the socket is dead."""
        try:
            sent = conn.sock.send(conn.outgoing)
        except BlockingIOError:
            sent = 0
        except OSError:
            conn.outgoing = b""
            self._give_up(conn)
            return False
        conn.outgoing = conn.outgoing[sent:]
        return True

    def _give_up(self, conn: _Conn) -> None:
        # Closed, reset or unwritable: every request it still owed is lost.
        self.errors += conn.left
        self.remaining -= conn.left
        conn.left = 0
        self.selector.unregister(conn.sock)

    def timed(self, elapsed: float) -> Timed:
        """What was measured: every latency, ``elapsed`` seconds, the errors."""
        return Timed(self.latencies, elapsed, self.errors)

    def __enter__(self) -> _Crowd:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.selector.close()
        for conn in self.conns:
            conn.sock.close()
