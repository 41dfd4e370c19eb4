"""Fake servers on loopback for the client's tests: peers that break the rules.

Each runs on a thread, on a real socket on a free port, and every wait is
bounded, so a client that never gives up fails its test instead of hanging it.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
import time
from collections.abc import Callable

from helpers import WAIT

Behaviour = Callable[[socket.socket], None]


class Peers:
    """Start fake servers with :meth:`start`; :meth:`close` stops them all."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # set on close: a peer still talking stops
        self._listeners: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._http: list[http.server.HTTPServer] = []

    def start(self, behave: Behaviour, host: str = "127.0.0.1") -> tuple[str, int]:
        """A one-connection peer that runs ``behave(conn)``; returns its address."""
        listener = socket.create_server((host, 0), family=_family(host))
        listener.settimeout(WAIT)
        self._listeners.append(listener)

        def run() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            # OSError: the client hung up first, as it may.
            with conn, contextlib.suppress(OSError):
                conn.settimeout(WAIT)
                behave(conn)

        self._thread(run)
        return listener.getsockname()[:2]

    def http(self) -> tuple[str, int]:
        """A real HTTP server (the standard library's), which answers 400 to a pipe line."""

        class Quiet(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
        self._http.append(server)
        self._thread(server.serve_forever)
        return "127.0.0.1", server.server_address[1]

    # -- behaviours --------------------------------------------------------------
    def answer(self, *replies: bytes) -> Behaviour:
        """Read a line, send the next reply, for each reply; then wait for the client
        to hang up (so a client that stops early is not told by a close)."""

        def behave(conn: socket.socket) -> None:
            reader = conn.makefile("rb")
            for reply in replies:
                if not reader.readline():
                    return
                conn.sendall(reply)
            while not self.stop.is_set() and reader.readline():
                pass

        return behave

    def trickle(self, every: float = 0.2, byte: bytes = b"x") -> Behaviour:
        """Read a line, then send one byte every ``every`` seconds and never a newline."""

        def behave(conn: socket.socket) -> None:
            conn.makefile("rb").readline()
            deadline = time.monotonic() + 4 * WAIT
            while not self.stop.wait(every) and time.monotonic() < deadline:
                conn.sendall(byte)

        return behave

    def silent(self) -> Behaviour:
        """Accept, then read nothing and say nothing until the test ends."""

        def behave(conn: socket.socket) -> None:
            self.stop.wait(2 * WAIT)

        return behave

    def close(self) -> None:
        self.stop.set()
        for listener in self._listeners:
            listener.close()
        for server in self._http:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(WAIT)

    def _thread(self, target: Callable[[], object]) -> None:
        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        self._threads.append(thread)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def ipv6_loopback() -> bool:
    """True if this machine can listen on ::1 (some CI containers cannot)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False
