"""Issue 6: clients that never send a newline still get an answer (flush_after)."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
from helpers import (
    FAKE_POLL,
    WAIT,
    FakeClock,
    LineReader,
    LogCapture,
    Serve,
    connect,
    round_trip,
    run_cli,
    settle,
    wait_until,
)

from spike import Client
from spike.server import DEFAULT_FLUSH_AFTER

# How long a test waits to be sure that *no* reply comes (strict mode).
QUIET_WAIT = 0.75


def test_docs_example_client_gets_a_reply_within_a_second(server) -> None:
    # The client from Python's socket documentation, as written there.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        s.connect(server.address)
        started = time.monotonic()
        s.sendall(b"Hello, world")
        data = s.recv(1024)
        elapsed = time.monotonic() - started
    assert data == b"Hello, world\n"
    assert elapsed < 1.0


def test_json_request_without_newline(server) -> None:
    with connect(server.address, timeout=1.0) as sock:
        sock.sendall(b'{"op": "echo", "id": 1, "text": "no newline"}')
        reply = json.loads(LineReader(sock).line())
    assert reply == {"id": 1, "ok": True, "result": {"text": "no newline"}}


def test_java_println_then_close_is_logged(server, log: LogCapture) -> None:
    # PrintWriter.println on Windows ends lines with \r\n; then the socket closes.
    with socket.create_connection(server.address, timeout=WAIT) as sock:
        sock.sendall(b"A message from CS361!\r\n")
    log.wait_for(lambda line: line.startswith("Connection closed"))
    assert log.lines.count("Received: A message from CS361!") == 1


def test_the_connection_goes_on_after_a_flush(serve: Serve) -> None:
    clock = FakeClock()
    with (
        serve(port=0, clock=clock, poll_interval=FAKE_POLL) as server,
        connect(server.address) as sock,
    ):
        reader = LineReader(sock)
        sock.sendall(b"first")
        wait_until(lambda: server.buffered_bytes == len(b"first"))
        clock.advance(DEFAULT_FLUSH_AFTER)
        assert reader.line() == b"first"
        # The late newline only ends "first"; it is not an extra empty message.
        sock.sendall(b"\nsecond\n")
        assert reader.line() == b"second"
        sock.sendall(b"third")
        wait_until(lambda: server.buffered_bytes == len(b"third"))
        clock.advance(DEFAULT_FLUSH_AFTER)
        assert reader.line() == b"third"
        assert server.total_messages == 3


def test_a_line_is_flushed_after_flush_after_not_before(serve: Serve) -> None:
    clock = FakeClock()
    with (
        serve(port=0, flush_after=0.25, clock=clock, poll_interval=FAKE_POLL) as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b"wait for me")
        wait_until(lambda: server.buffered_bytes == len(b"wait for me"))
        clock.advance(0.2)
        settle()
        assert server.total_messages == 0  # not yet
        clock.advance(0.05)
        assert LineReader(sock).line() == b"wait for me"


def test_newline_clients_see_no_change(server) -> None:
    with connect(server.address) as sock:
        started = time.monotonic()
        for i in range(50):
            assert round_trip(sock, f"line {i}\n".encode()) == f"line {i}".encode()
        # 50 round trips, far less than one flush delay each.
        assert time.monotonic() - started < 50 * 0.25 / 2


def test_strict_mode_waits_for_the_newline(serve: Serve) -> None:
    with serve(port=0, flush_after=0) as server, connect(server.address) as sock:
        sock.settimeout(QUIET_WAIT)
        sock.sendall(b"Hello, world")
        with pytest.raises(socket.timeout):
            sock.recv(1024)
        sock.settimeout(WAIT)
        sock.sendall(b"\n")
        assert LineReader(sock).line() == b"Hello, world"


def test_the_line_limit_holds_while_waiting(serve: Serve) -> None:
    with (
        serve(port=0, max_line_bytes=64, flush_after=5.0) as server,
        connect(server.address) as sock,
    ):
        reader = LineReader(sock)
        sock.sendall(b"x" * 65)  # over the limit, no newline, long flush delay
        reply = json.loads(reader.line())
        assert reply["error"]["code"] == "line_too_long"
        assert reader.at_eof()


def test_trickling_client_is_bounded_and_delays_nobody(serve: Serve) -> None:
    # A byte every 0.1 s (of a fake clock) for longer than flush_after: each
    # byte restarts the flush timer, so only the line limit ends this line,
    # and the other client is answered at once throughout.
    clock = FakeClock()
    with (
        serve(
            port=0, max_line_bytes=32, flush_after=0.5, clock=clock, poll_interval=FAKE_POLL
        ) as server,
        connect(server.address) as trickler,
        Client(*server.address, timeout=1.0) as other,
    ):
        for i in range(32):
            trickler.sendall(b"t")
            held = i + 1
            wait_until(lambda: server.buffered_bytes == held)  # noqa: B023 (used at once)
            assert other.send_text(f"meanwhile {i}") == f"meanwhile {i}"
            clock.advance(0.1)
        settle()
        assert server.total_messages == 32  # the others' only: no flush cut the line
        trickler.sendall(b"t")  # the 33rd byte passes the limit
        reader = LineReader(trickler)
        reply = json.loads(reader.line())
        assert reply["error"]["code"] == "line_too_long"
        assert reader.at_eof()


def test_no_flush_while_the_server_is_not_reading(serve: Serve) -> None:
    """A client that sends a long pipeline and reads the replies only later:
    the server stops reading (back-pressure), possibly in the middle of a
    line, and the rest of that line waits unread in the socket. Not having
    read new bytes is not "no new bytes arrived", so the line is not cut."""
    line = b"r" * 999 + b"\n"
    clock = FakeClock()
    with serve(port=0, flush_after=0.1, clock=clock, poll_interval=FAKE_POLL) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(server.address)
        with sock:
            sock.setblocking(False)
            stream = line * 20_000
            sent = 0
            while sent < len(stream):  # until every buffer on the way is full
                try:
                    sent += sock.send(stream[sent : sent + 65536])
                except BlockingIOError:
                    break
            assert sent < len(stream), "the server never applied back-pressure"
            clock.advance(0.3)  # the client is busy for longer than flush_after
            settle()
            sock.settimeout(WAIT)
            # The rest of the last line goes out while this thread reads:
            # sending it first could block, as every buffer is full.
            missing = (-sent) % len(line)
            finisher = threading.Thread(target=sock.sendall, args=(stream[sent : sent + missing],))
            finisher.start()
            reader = LineReader(sock)
            for _ in range((sent + missing) // len(line)):
                assert reader.line() + b"\n" == line
            finisher.join(WAIT)


def test_cli_help_names_the_flag() -> None:
    result = run_cli("spike.server", "--help")
    assert result.returncode == 0
    assert "--flush-after" in result.stdout


def test_cli_default_answers_and_strict_mode_waits(server_process) -> None:
    default = server_process("--port", "0")
    with socket.create_connection(("127.0.0.1", default.port), timeout=1.0) as sock:
        sock.sendall(b"Hello, world")
        assert sock.recv(1024) == b"Hello, world\n"
    strict = server_process("--port", "0", "--flush-after", "0")
    with socket.create_connection(("127.0.0.1", strict.port), timeout=QUIET_WAIT) as sock:
        sock.sendall(b"Hello, world")
        with pytest.raises(socket.timeout):
            sock.recv(1024)
        sock.settimeout(WAIT)
        sock.sendall(b"\n")
        assert sock.recv(1024) == b"Hello, world\n"
