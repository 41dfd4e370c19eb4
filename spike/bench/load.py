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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from spike import Client

_RECV = 1 << 16
_clock = time.perf_counter_ns


class LoadError(RuntimeError):
    """A measurement could not complete: wrong reply, closed connection, timeout."""


@dataclass
class Timed:
    """Per-request latencies (ns) and the wall time of the whole batch (s)."""

    latencies_ns: list[int]
    elapsed_s: float
    errors: int = 0
    notes: list[str] = field(default_factory=list)


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


def text_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """Sends ``text`` as one line ``count`` times, waiting for each echo."""
    line = text.encode() + b"\n"
    with connect(host, port) as sock:
        send, recv = sock.sendall, sock.recv
        for _ in range(warmup):
            send(line)
            if _read_line(sock) != line:
                raise LoadError("the reply is not the echo of the request")
        latencies = [0] * count
        wrong = 0
        with _quiet_gc():
            start = _clock()
            for i in range(count):
                t0 = _clock()
                send(line)
                reply = recv(_RECV)
                if not reply.endswith(b"\n"):
                    reply = _read_line(sock, reply)
                latencies[i] = _clock() - t0
                wrong += reply != line
            elapsed = (_clock() - start) / 1e9
    if wrong:
        raise LoadError(f"{wrong} replies were not the echo of the request")
    return Timed(latencies, elapsed)


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

        for i in range(warmup):
            reply = call(-1 - i)
            if reply.get("id") != -1 - i or reply.get("result", {}).get("text") != text:
                raise LoadError(f"unexpected JSON reply: {reply!r:.200}")
        latencies = [0] * count
        wrong = 0
        with _quiet_gc():
            start = _clock()
            for i in range(count):
                t0 = _clock()
                reply = call(i)
                latencies[i] = _clock() - t0
                wrong += reply.get("id") != i or not reply.get("ok")
            elapsed = (_clock() - start) / 1e9
    if wrong:
        raise LoadError(f"{wrong} JSON replies had the wrong id or ok=false")
    return Timed(latencies, elapsed)


def client_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """JSON echo requests through the spike's own :class:`spike.Client`, as a user sends them."""
    with Client(host, port, timeout=10) as client:
        request = client.request
        for _ in range(warmup):
            if request("echo", text=text).get("text") != text:
                raise LoadError("spike.Client got a reply that is not the echo of the request")
        latencies = [0] * count
        wrong = 0
        with _quiet_gc():
            start = _clock()
            for i in range(count):
                t0 = _clock()
                result = request("echo", text=text)
                latencies[i] = _clock() - t0
                wrong += result.get("text") != text
            elapsed = (_clock() - start) / 1e9
    if wrong:
        raise LoadError(f"{wrong} spike.Client replies were not the echo of the request")
    return Timed(latencies, elapsed)


def http_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """POSTs ``text`` on one kept-alive ``http.client`` connection (Nagle off)."""
    body = text.encode()
    headers = {"Content-Type": "text/plain; charset=utf-8"}
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:

        def call() -> bytes:
            conn.request("POST", "/echo", body=body, headers=headers)
            response = conn.getresponse()
            return response.read()

        for _ in range(warmup):
            if call() != body:
                raise LoadError("HTTP reply body is not the echo of the request")
        latencies = [0] * count
        wrong = 0
        with _quiet_gc():
            start = _clock()
            for i in range(count):
                t0 = _clock()
                reply = call()
                latencies[i] = _clock() - t0
                wrong += reply != body
            elapsed = (_clock() - start) / 1e9
    finally:
        conn.close()
    if wrong:
        raise LoadError(f"{wrong} HTTP replies were not the echo of the request")
    return Timed(latencies, elapsed)


def zmq_round_trips(host: str, port: int, text: str, count: int, warmup: int) -> Timed:
    """REQ/REP round trips with pyzmq: send one message, wait for its reply."""
    import zmq  # noqa: PLC0415  (optional: the 'bench' extra)

    body = text.encode()
    context = zmq.Context()
    request = context.socket(zmq.REQ)
    request.setsockopt(zmq.LINGER, 0)
    request.setsockopt(zmq.RCVTIMEO, 10_000)
    request.connect(f"tcp://{host}:{port}")
    try:
        send, recv = request.send, request.recv
        for _ in range(warmup):
            send(body)
            if recv() != body:
                raise LoadError("ZeroMQ reply is not the echo of the request")
        latencies = [0] * count
        wrong = 0
        with _quiet_gc():
            start = _clock()
            for i in range(count):
                t0 = _clock()
                send(body)
                reply = recv()
                latencies[i] = _clock() - t0
                wrong += reply != body
            elapsed = (_clock() - start) / 1e9
    except zmq.Again as exc:
        raise LoadError("ZeroMQ reply timed out") from exc
    finally:
        request.close()
        context.term()
    if wrong:
        raise LoadError(f"{wrong} ZeroMQ replies were not the echo of the request")
    return Timed(latencies, elapsed)


def pipelined(host: str, port: int, text: str, count: int, batch: int = 256) -> float:
    """Streams ``count`` lines on one connection while reading the replies.

    A writer thread sends lines in batches without waiting; this thread counts
    reply lines. Returns the seconds from the first send to the last reply.
    """
    line = text.encode() + b"\n"
    with connect(host, port, timeout=30) as sock:
        failure: list[BaseException] = []

        def write() -> None:
            try:
                full, rest = divmod(count, batch)
                chunk = line * batch
                for _ in range(full):
                    sock.sendall(chunk)
                if rest:
                    sock.sendall(line * rest)
            except OSError as exc:
                failure.append(exc)

        writer = threading.Thread(target=write, name="bench-writer", daemon=True)
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
        writer.join(timeout=30)
    if failure:
        raise LoadError(f"writer failed: {failure[0]}")
    if seen != count:
        raise LoadError(f"got {seen} replies for {count} messages")
    return elapsed


def big_message(host: str, port: int, size: int) -> float:
    """Sends one line of ``size`` bytes and reads its echo; returns seconds.

    Writing and reading happen at once (writer thread) because a server that
    streams its echo would otherwise fill both socket buffers and stall.
    """
    line = b"x" * size + b"\n"
    with connect(host, port, timeout=60) as sock:
        failure: list[BaseException] = []

        def write() -> None:
            try:
                sock.sendall(line)
            except OSError as exc:
                failure.append(exc)

        writer = threading.Thread(target=write, name="bench-writer", daemon=True)
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
        writer.join(timeout=60)
    if failure:
        raise LoadError(f"writer failed: {failure[0]}")
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
    __slots__ = ("buffer", "left", "outgoing", "sent_at", "sock")

    def __init__(self, sock: socket.socket, requests: int) -> None:
        self.sock = sock
        self.left = requests
        self.sent_at = 0
        self.buffer = b""
        self.outgoing = b""


_IN_PROGRESS = {
    0,
    errno.EINPROGRESS,
    errno.EWOULDBLOCK,
    errno.EAGAIN,
    getattr(errno, "WSAEWOULDBLOCK", -1),
}


def many_connections(
    host: str, port: int, text: str, connections: int, requests_each: int, timeout_s: float = 60.0
) -> Timed:
    """Opens ``connections`` sockets, then runs ``requests_each`` round trips on each, all at once.

    One thread drives every socket with ``selectors`` (a thousand client
    threads would measure the client's scheduler instead of the server).
    Each connection sends a line, waits for its echo, and sends the next.
    Connections are all open before the clock starts; a refused or reset
    connection, a wrong reply or a request unanswered after ``timeout_s``
    counts as one error. Latencies are per request; the elapsed time runs
    from the first send to the last reply.
    """
    line = text.encode() + b"\n"
    selector = selectors.DefaultSelector()
    pending: list[_Conn] = []
    errors = 0
    latencies: list[int] = []
    deadline = time.monotonic() + timeout_s

    try:
        # Phase 1: connect everything (not timed).
        for _ in range(connections):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex((host, port))
            if code not in _IN_PROGRESS:
                sock.close()
                errors += 1
                continue
            conn = _Conn(sock, requests_each)
            selector.register(sock, selectors.EVENT_WRITE, conn)
            pending.append(conn)
        connecting = len(pending)
        while connecting and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                conn = key.data
                selector.unregister(conn.sock)
                connecting -= 1
                if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    conn.left = 0
                    errors += 1
        for key in list(selector.get_map().values()):  # still not connected at the deadline
            selector.unregister(key.fileobj)
            key.data.left = 0
            errors += 1
        live = [conn for conn in pending if conn.left]

        # Phase 2: every live connection does its round trips; timed.
        remaining = sum(conn.left for conn in live)

        def give_up(conn: _Conn) -> int:
            # Closed, reset or unwritable: every request it still owed is lost.
            lost, conn.left = conn.left, 0
            selector.unregister(conn.sock)
            return lost

        def send_next(conn: _Conn) -> bool:
            conn.sent_at = _clock()
            conn.outgoing = line
            if not _flush(conn):
                return False
            if conn.outgoing:  # the kernel took part of it: finish when writable
                selector.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
            return True

        with _quiet_gc():
            start = _clock()
            for conn in live:
                selector.register(conn.sock, selectors.EVENT_READ, conn)
                if not send_next(conn):
                    lost = give_up(conn)
                    errors += lost
                    remaining -= lost
            last = start
            while remaining and time.monotonic() < deadline:
                for key, mask in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    conn = key.data
                    if mask & selectors.EVENT_WRITE and conn.outgoing:
                        if not _flush(conn):
                            lost = give_up(conn)
                            errors += lost
                            remaining -= lost
                            continue
                        if not conn.outgoing:
                            selector.modify(conn.sock, selectors.EVENT_READ, conn)
                    if not mask & selectors.EVENT_READ:
                        continue
                    try:
                        chunk = conn.sock.recv(_RECV)
                    except OSError:
                        chunk = b""
                    if not chunk:
                        lost = give_up(conn)
                        errors += lost
                        remaining -= lost
                        continue
                    conn.buffer += chunk
                    if not conn.buffer.endswith(b"\n"):
                        continue
                    now = _clock()
                    latencies.append(now - conn.sent_at)
                    last = now
                    errors += conn.buffer != line
                    conn.buffer = b""
                    conn.left -= 1
                    remaining -= 1
                    if not conn.left:
                        selector.unregister(conn.sock)
                    elif not send_next(conn):
                        lost = give_up(conn)
                        errors += lost
                        remaining -= lost
            errors += remaining  # unanswered at the deadline
            elapsed = (last - start) / 1e9
    finally:
        selector.close()
        for conn in pending:
            conn.sock.close()
    return Timed(latencies, elapsed, errors)


def _flush(conn: _Conn) -> bool:
    """Sends what the connection still owes; False when the socket is dead."""
    try:
        sent = conn.sock.send(conn.outgoing)
    except BlockingIOError:
        sent = 0
    except OSError:
        conn.outgoing = b""
        return False
    conn.outgoing = conn.outgoing[sent:]
    return True
