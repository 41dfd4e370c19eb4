"""Reference servers the benchmark compares the pipe with.

Each one runs in its own process, started by ``spike.bench`` as
``python -m spike.bench.servers KIND [--port N]``, and prints
``Serving on HOST:PORT`` once it listens, like the spike's own server. They
are deliberately plain: each is what a student would write with the standard
library (or pyzmq) in a few lines, so the gap between them and the pipe is
the price of the pipe's features.

Kinds:

``echo``
    A blocking socket server with one thread per connection that sends back
    every byte it reads: no framing, no parsing. This is the Python floor.
``lines``
    The naive lines server: a thread per connection reads what arrived,
    writes each line back through a buffered writer and flushes it once no
    more input is waiting, so the replies to one ``recv`` leave in one send
    (what a server written with buffered streams does). The yardstick for
    plain text, counted in messages.
``jsonlines``
    The naive JSON-lines server, written the same way: each line is
    ``json.loads``-ed and answered with ``json.dumps``. The yardstick for
    the pipe's JSON mode.
``lines-sendall`` / ``jsonlines-sendall``
    The same two servers with one ``sendall`` per line instead, as the
    shortest code writes them: a system call per reply, so they fall far
    behind on pipelined input. Extra rows, not yardsticks.
``selectors``
    One thread and a :mod:`selectors` loop: every readable socket's bytes
    are sent straight back (``sendall``; no framing, no parsing). The floor
    for many connections on one event loop, the pipe's own design.
``waits``
    A :class:`socketserver.ThreadingTCPServer` JSON-lines server, a thread
    per connection, whose ``wait`` and ``wait_async`` ops sleep ``ms``
    milliseconds (``time.sleep``): the reference for ops that wait.
``waits-floor``
    The same ops on one thread and a :mod:`selectors` loop: each request's
    reply is due ``ms`` later and sent from a heap of due replies; no log,
    no limits, no object per connection. The floor for ops that wait on an
    event loop: what the pipe could reach if it did nothing else.
``http``
    HTTP/1.1 keep-alive with ``http.server`` (threaded, Nagle disabled): a
    POST's body is sent back as the response body.
``zmq``
    ZeroMQ REQ/REP with pyzmq: every request is answered with its own bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import selectors
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
_BACKLOG = 4096


def _announce(host: str, port: int) -> None:
    # The parent process waits for exactly this line before it measures.
    print(f"Serving on {host}:{port}", flush=True)


def _listen(port: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, port))
    listener.listen(_BACKLOG)
    return listener


def _serve_threads(port: int, handle: Callable[[socket.socket], None]) -> None:
    """Accepts forever, handing each connection to ``handle`` on a new thread."""
    listener = _listen(port)
    _announce(HOST, listener.getsockname()[1])
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def _echo_bytes(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(65536):
                conn.sendall(data)
        except OSError:
            pass  # the peer went away; nothing to clean up beyond closing


def _echo_lines_sendall(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as lines:
        try:
            for line in lines:
                conn.sendall(line)
        except OSError:
            pass


def _json_reply(line: bytes) -> bytes:
    request = json.loads(line)
    reply = {"id": request.get("id"), "ok": True, "result": {"text": request.get("text")}}
    return json.dumps(reply).encode() + b"\n"


def _echo_json_lines_sendall(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as lines:
        try:
            for line in lines:
                conn.sendall(_json_reply(line))
        except (OSError, ValueError):
            pass


def _batched(answer: Callable[[bytes], bytes]) -> Callable[[socket.socket], None]:
    """A connection handler that answers every line of each ``recv`` into a
    buffered writer and flushes it when no more input waits: one send per
    ``recv``, however many lines it held."""

    def handle(conn: socket.socket) -> None:
        with conn, conn.makefile("wb") as out:
            rest = b""
            try:
                while data := conn.recv(65536):
                    lines = (rest + data).split(b"\n")
                    rest = lines.pop()
                    for line in lines:
                        out.write(answer(line))
                    out.flush()  # the input is used up: send what this recv answered
            except (OSError, ValueError):
                pass

    return handle


_echo_lines = _batched(lambda line: line + b"\n")
_echo_json_lines = _batched(_json_reply)


class _WaitHandler(socketserver.StreamRequestHandler):
    """A JSON-lines handler whose ops wait ``ms`` milliseconds before they answer."""

    disable_nagle_algorithm = True

    def handle(self) -> None:
        for line in self.rfile:
            request = json.loads(line)
            time.sleep(request["ms"] / 1000)
            reply = {"ok": True, "result": {"waited_ms": request["ms"]}}
            self.wfile.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")


class _WaitServer(socketserver.ThreadingTCPServer):
    request_queue_size = _BACKLOG  # the default of 5 would refuse a crowd of clients
    daemon_threads = True
    allow_reuse_address = True


def _serve_waits(port: int) -> None:
    server = _WaitServer((HOST, port), _WaitHandler)
    _announce(HOST, server.server_address[1])
    server.serve_forever()


def _listen_selecting(port: int) -> tuple[socket.socket, selectors.BaseSelector]:
    """A non-blocking listener, announced, watched by a new selector."""
    listener = _listen(port)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    _announce(HOST, listener.getsockname()[1])
    return listener, selector


def _accept(listener: socket.socket, selector: selectors.BaseSelector) -> socket.socket | None:
    """The next queued connection, watched for reading (None: none was queued)."""
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return None
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    selector.register(conn, selectors.EVENT_READ)
    return conn


def _serve_waits_floor(port: int) -> None:
    """Answers each JSON line ``{"ms": N}`` N ms later: one thread, one selector, one heap."""
    listener, selector = _listen_selecting(port)
    due: list[tuple[float, int, socket.socket, bytes]] = []  # (when, order, to whom, reply)
    order = 0
    held: dict[socket.socket, bytes] = {}  # a line's start, until its newline comes
    while True:
        timeout = max(0.0, due[0][0] - time.monotonic()) if due else None
        for key, _ in selector.select(timeout):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                conn = _accept(listener, selector)
                if conn is not None:
                    held[conn] = b""
                continue
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                del held[sock]
                sock.close()
                continue
            *lines, held[sock] = (held[sock] + data).split(b"\n")
            for line in lines:
                ms = json.loads(line)["ms"]
                reply = {"ok": True, "result": {"waited_ms": ms}}
                body = json.dumps(reply, separators=(",", ":")).encode() + b"\n"
                order += 1
                heapq.heappush(due, (time.monotonic() + ms / 1000, order, sock, body))
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, _, sock, body = heapq.heappop(due)
            if sock.fileno() >= 0:  # not closed meanwhile
                with contextlib.suppress(OSError):
                    sock.sendall(body)  # a short reply fits the send buffer at once


def _serve_selectors(port: int) -> None:
    """Echoes bytes on every connection from one thread and one selector."""
    listener, selector = _listen_selecting(port)
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                _accept(listener, selector)
                continue
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(65536)
                if data:
                    sock.sendall(data)  # a small echo fits the send buffer at once
                    continue
            except OSError:
                pass
            selector.unregister(sock)
            sock.close()


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every POST with its own body, on a kept-alive connection."""

    protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection for many calls
    disable_nagle_algorithm = True  # else small replies can wait for a delayed ACK

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a log line per request would measure the terminal, not HTTP


class _QuietHTTPServer(ThreadingHTTPServer):
    request_queue_size = _BACKLOG
    daemon_threads = True


def _serve_http(port: int) -> None:
    server = _QuietHTTPServer((HOST, port), _EchoHandler)
    _announce(HOST, server.server_address[1])
    server.serve_forever()


def _serve_zmq(port: int) -> None:
    import zmq  # noqa: PLC0415  optional: the parent checks that it imports before starting us

    context = zmq.Context()
    reply = context.socket(zmq.REP)
    if port:
        reply.bind(f"tcp://{HOST}:{port}")
    else:
        port = reply.bind_to_random_port(f"tcp://{HOST}")
    _announce(HOST, port)
    while True:
        reply.send(reply.recv())


# The servers with a thread per connection, by kind.
_THREADED: dict[str, Callable[[socket.socket], None]] = {
    "echo": _echo_bytes,
    "lines": _echo_lines,
    "jsonlines": _echo_json_lines,
    "lines-sendall": _echo_lines_sendall,
    "jsonlines-sendall": _echo_json_lines_sendall,
}


def main(argv: list[str] | None = None) -> int:
    """Runs one reference server until the process is killed."""
    parser = argparse.ArgumentParser(prog="python -m spike.bench.servers")
    parser.add_argument(
        "kind", choices=[*sorted(_THREADED), "selectors", "waits", "waits-floor", "http", "zmq"]
    )
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.kind in _THREADED:
            _serve_threads(args.port, _THREADED[args.kind])
        elif args.kind == "selectors":
            _serve_selectors(args.port)
        elif args.kind == "waits":
            _serve_waits(args.port)
        elif args.kind == "waits-floor":
            _serve_waits_floor(args.port)
        elif args.kind == "http":
            _serve_http(args.port)
        else:
            _serve_zmq(args.port)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"error: cannot serve on {HOST}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
