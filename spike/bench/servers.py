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
    The naive lines server: read a line, send it back, one ``sendall`` per
    line. What the pipe's plain-text mode would cost done the obvious way,
    and the yardstick for pipelined messages (counted in messages: the byte
    echo above answers a whole chunk of lines with one write).
``jsonlines``
    The naive JSON-lines server: read a line, ``json.loads`` it, answer with
    ``json.dumps``. What the pipe's JSON mode would cost done the obvious way.
``selectors``
    One thread and a :mod:`selectors` loop: every readable socket's bytes
    are sent straight back (``sendall``; no framing, no parsing). The floor
    for many connections on one event loop, the pipe's own design.
``http``
    HTTP/1.1 keep-alive with ``http.server`` (threaded, Nagle disabled): a
    POST's body is sent back as the response body.
``zmq``
    ZeroMQ REQ/REP with pyzmq: every request is answered with its own bytes.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import threading
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


def _echo_lines(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as lines:
        try:
            for line in lines:
                conn.sendall(line)
        except OSError:
            pass


def _echo_json_lines(conn: socket.socket) -> None:
    with conn, conn.makefile("rb") as lines:
        try:
            for line in lines:
                request = json.loads(line)
                reply = {
                    "id": request.get("id"),
                    "ok": True,
                    "result": {"text": request.get("text")},
                }
                conn.sendall(json.dumps(reply).encode() + b"\n")
        except (OSError, ValueError):
            pass


def _serve_selectors(port: int) -> None:
    """Echoes bytes on every connection from one thread and one selector."""
    listener = _listen(port)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    _announce(HOST, listener.getsockname()[1])
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            if sock is listener:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                selector.register(conn, selectors.EVENT_READ)
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


def main(argv: list[str] | None = None) -> int:
    """Runs one reference server until the process is killed."""
    parser = argparse.ArgumentParser(prog="python -m spike.bench.servers")
    parser.add_argument("kind", choices=["echo", "lines", "jsonlines", "selectors", "http", "zmq"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if args.kind == "echo":
            _serve_threads(args.port, _echo_bytes)
        elif args.kind == "lines":
            _serve_threads(args.port, _echo_lines)
        elif args.kind == "jsonlines":
            _serve_threads(args.port, _echo_json_lines)
        elif args.kind == "selectors":
            _serve_selectors(args.port)
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
