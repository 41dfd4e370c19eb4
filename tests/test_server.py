"""The server over real sockets on free ports: echo, errors, limits, concurrency."""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from helpers import (
    FAKE_POLL,
    ROOT,
    WAIT,
    FakeClock,
    LineReader,
    LogCapture,
    Serve,
    connect,
    round_trip,
    settle,
    wait_until,
)

from spike import (
    AddressInUseError,
    BindError,
    Client,
    Connection,
    OpRegistry,
    PipeError,
    Server,
    default_ops,
    running_server,
)


def error_of(line: bytes) -> dict:
    reply = json.loads(line)
    assert reply["ok"] is False
    assert set(reply["error"]) == {"code", "message"}
    return reply


# --- basics ---------------------------------------------------------------------
def test_binds_in_the_constructor_and_reports_the_real_port() -> None:
    with Server(port=0) as server:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0
        # Already listening: a client can connect before the loop runs.
        socket.create_connection(server.address, timeout=WAIT).close()


def test_port_in_use_names_host_and_port() -> None:
    with Server(port=0) as first:
        port = first.address[1]
        with pytest.raises(AddressInUseError) as caught:
            Server(port=port)
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert isinstance(caught.value, PipeError)


def test_ipv6_loopback(log: LogCapture) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        server = Server("::1", 0, log=log)
    except BindError:
        pytest.skip("no IPv6 loopback here")
    with server:
        thread = threading.Thread(target=server.serve_forever, args=(0.05,))
        thread.start()
        try:
            with Client("::1", server.address[1]) as client:
                assert client.send_text("over IPv6") == "over IPv6"
            log.wait_for(lambda line: line.startswith("Connection opened: [::1]:"))
        finally:
            server.shutdown()
            thread.join(WAIT)


def test_a_name_with_both_families_listens_on_ipv4() -> None:
    # What getaddrinfo("localhost", ...) returns on Windows and macOS: ::1
    # first. Clients that try only 127.0.0.1 (Java, AF_INET sockets) must
    # still reach the server.
    from spike.server._net import preferred_address

    v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 3000, 0, 0))
    v4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 3000))
    assert preferred_address([v6, v4]) == (socket.AF_INET, ("127.0.0.1", 3000))
    assert preferred_address([v6]) == (socket.AF_INET6, ("::1", 3000, 0, 0))
    with Server("localhost", 0) as server:
        assert server.address[0] == "127.0.0.1"


def test_unknown_host_is_a_bind_error() -> None:
    with pytest.raises(BindError) as caught:
        Server("no-such-host.invalid", 0)
    assert "no-such-host.invalid:0" in str(caught.value)


def test_bad_arguments() -> None:
    bad: list[dict[str, Any]] = [
        {"port": 70000},
        {"max_line_bytes": 0},
        {"idle_timeout": 0},
        {"flush_after": -1},
        {"max_buffered_bytes": 0},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            Server(**{"port": 0, **kwargs})


def test_plain_text_echo(server) -> None:
    with connect(server.address) as sock:
        reader = LineReader(sock)
        sock.sendall("A message from CS361!\nhé€𝄞\r\n\n".encode())
        assert reader.line() == b"A message from CS361!"
        assert reader.line() == "hé€𝄞".encode()
        assert reader.line() == b""


def test_json_echo_keeps_the_id(server) -> None:
    with connect(server.address) as sock:
        line = round_trip(sock, b'{"op": "echo", "id": [1, "a"], "text": "hi"}\n')
    assert json.loads(line) == {"id": [1, "a"], "ok": True, "result": {"text": "hi"}}


def test_pipelined_messages_come_back_in_order(server) -> None:
    messages = [f"message {i}" for i in range(2000)]
    with connect(server.address) as sock:
        sock.sendall("".join(m + "\n" for m in messages).encode())
        reader = LineReader(sock)
        assert [reader.line().decode() for _ in messages] == messages


def test_logs_open_receive_close(server, log: LogCapture) -> None:
    with connect(server.address) as sock:
        round_trip(sock, b"hello\n")
        local = "{}:{}".format(*sock.getsockname()[:2])
        round_trip(sock, b"x" * 1000 + b"\x1b[2J\n")
    log.wait_for(lambda line: line.startswith("Connection closed"))
    assert log.lines[0] == f"Connection opened: {local}"
    assert log.lines[1] == "Received: hello"
    shortened = log.lines[2]
    assert shortened.startswith("Received: xxx") and "(1004 characters)" in shortened
    assert len(shortened) < 300
    assert log.lines[3] == f"Connection closed: {local} (2 messages)"


def test_control_characters_are_escaped_in_the_log(server, log: LogCapture) -> None:
    with connect(server.address) as sock:
        assert round_trip(sock, b"ring\x07 \x1b[31mred\n") == b"ring\x07 \x1b[31mred"
    line = log.wait_for(lambda line: line.startswith("Received:"))
    assert line == "Received: ring\\x07 \\x1b[31mred"


def test_seed_client_send_without_newline_then_close_is_logged_in_full(server, log) -> None:
    # The seed's client: connect, sendall, close, never reads.
    with socket.create_connection(server.address, timeout=WAIT) as sock:
        sock.sendall(b"A message from CS361!")
    log.wait_for(lambda line: line.startswith("Connection closed"))
    assert "Received: A message from CS361!" in log.lines


def test_half_close_still_gets_the_reply(serve: Serve) -> None:
    with serve(port=0, flush_after=0) as server, connect(server.address) as sock:
        sock.sendall("no newline, then EOF ✓".encode())
        sock.shutdown(socket.SHUT_WR)
        reader = LineReader(sock)
        assert reader.line() == "no newline, then EOF ✓".encode()
        assert reader.at_eof()


# --- every error code, and the connection survives ------------------------------
@pytest.mark.parametrize(
    ("line", "code", "request_id"),
    [
        (b"caf\xc3\n", "bad_utf8", None),
        (b'{"op": "echo", "id": 9, "text": "\xff"}\n', "bad_utf8", None),
        (b'{"op": "echo",\n', "bad_json", None),
        # Not "the result is not JSON-serializable": the id could never be echoed.
        (b'{"op": "echo", "id": 1e999, "text": "x"}\n', "bad_json", None),
        (b"[1, 2]\n", None, None),  # not starting with { : plain text, echoed
        (b'{"id": 5, "text": "no op"}\n', "bad_request", 5),
        (b'{"op": "echo", "id": 6}\n', "bad_request", 6),
        (b'{"op": "nope", "id": 7}\n', "unknown_op", 7),
    ],
)
def test_bad_input_gets_an_error_and_the_connection_stays_usable(
    server, line, code, request_id
) -> None:
    with connect(server.address) as sock:
        reader = LineReader(sock)
        sock.sendall(line)
        reply = reader.line()
        if code is None:
            assert reply == line.rstrip(b"\n")
        else:
            error = error_of(reply)
            assert error["error"]["code"] == code
            if request_id is None:
                assert "id" not in error
            else:
                assert error["id"] == request_id
        sock.sendall(b"still here\n")
        assert reader.line() == b"still here"


def test_op_failed_keeps_the_server_running(log: LogCapture, serve: Serve) -> None:
    ops = default_ops.copy()
    ops.op("crash")(lambda params, ctx: 1 / 0)
    ops.op("unencodable")(lambda params, ctx: {"x": object()})
    with serve(port=0, ops=ops, log=log) as server, connect(server.address) as sock:
        reader = LineReader(sock)
        sock.sendall(b'{"op": "crash", "id": 1}\n{"op": "unencodable", "id": 2}\nok\n')
        crash = error_of(reader.line())
        assert crash["id"] == 1 and crash["error"]["code"] == "op_failed"
        assert "ZeroDivisionError" in crash["error"]["message"]
        unencodable = error_of(reader.line())
        assert unencodable["id"] == 2 and unencodable["error"]["code"] == "op_failed"
        assert reader.line() == b"ok"
    assert any(line.startswith("Error:") and "ZeroDivisionError" in line for line in log.lines)


def test_over_long_line_closes_only_that_connection(serve: Serve) -> None:
    with (
        serve(port=0, max_line_bytes=100) as server,
        connect(server.address) as bystander,
        connect(server.address) as offender,
    ):
        assert round_trip(bystander, b"before\n") == b"before"
        reader = LineReader(offender)
        offender.sendall(b"fine\n" + b"x" * 101 + b"\n")
        assert reader.line() == b"fine"
        error = error_of(reader.line())
        assert error["error"]["code"] == "line_too_long"
        assert reader.at_eof()
        assert round_trip(bystander, b"after\n") == b"after"
        assert round_trip(bystander, b"y" * 100 + b"\n") == b"y" * 100


def test_over_long_line_is_logged_with_the_reason(log: LogCapture, serve: Serve) -> None:
    with serve(port=0, max_line_bytes=100, log=log) as server:
        with connect(server.address) as sock:
            peer = "{}:{}".format(*sock.getsockname()[:2])
            sock.sendall(b"fine\n" + b"x" * 101 + b"\n")
            reader = LineReader(sock)
            assert reader.line() == b"fine"
            assert error_of(reader.line())["error"]["code"] == "line_too_long"
        log.wait_for(lambda line: line.startswith("Connection closed"))
    assert log.lines[1:] == [
        "Received: fine",
        f"Error: {peer} sent a line longer than 100 bytes; closing the connection",
        f"Connection closed: {peer} (1 message)",
    ]


def test_limit_is_exact_for_a_line_on_its_own(serve: Serve) -> None:
    with serve(port=0, max_line_bytes=100) as server, connect(server.address) as sock:
        assert round_trip(sock, b"a" * 100 + b"\n") == b"a" * 100
        assert round_trip(sock, b"b" * 99 + b"\r\n") == b"b" * 99
        reader = LineReader(sock)
        sock.sendall(b"c" * 101 + b"\n")
        assert error_of(reader.line())["error"]["code"] == "line_too_long"
        assert reader.at_eof()


def test_over_long_line_is_refused_before_its_newline(serve: Serve) -> None:
    with serve(port=0, max_line_bytes=1000) as server, connect(server.address) as sock:
        sock.sendall(b"z" * 5000)  # no newline, far past the limit
        reader = LineReader(sock)
        assert error_of(reader.line())["error"]["code"] == "line_too_long"
        assert reader.at_eof()


def test_error_reply_survives_a_client_that_keeps_sending(serve: Serve) -> None:
    # Closing a socket with unread input sends a reset, which can destroy the
    # error reply in flight; the server half-closes and drains instead.
    with serve(port=0, max_line_bytes=1000) as server, connect(server.address) as sock:
        sock.sendall(b"x" * 200_000)
        reader = LineReader(sock)
        assert json.loads(reader.line())["error"]["code"] == "line_too_long"
        assert reader.at_eof()


def test_default_limit_is_one_mebibyte(server) -> None:
    with connect(server.address) as sock:
        reader = LineReader(sock)
        sock.sendall(b"a" * 1_048_576 + b"\n")
        assert reader.line() == b"a" * 1_048_576
        sock.sendall(b"b" * 1_048_577 + b"\n")
        assert error_of(reader.line())["error"]["code"] == "line_too_long"


def test_a_big_line_reaches_a_slow_reader_whole_and_in_order(
    log: LogCapture, serve: Serve
) -> None:
    """A reply far bigger than the socket buffers goes out in many partial
    sends, and the message after it still comes back after it."""
    big = bytes(range(32, 127)) * 50_000  # 4.75 MB of ASCII, no newline
    with serve(port=0, max_line_bytes=len(big), log=log) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(server.address)
        sock.settimeout(WAIT)
        with sock:
            writer = threading.Thread(target=sock.sendall, args=(big + b"\nafter\n",), daemon=True)
            writer.start()
            reader = LineReader(sock)
            received = b""
            while b"\n" not in received:  # small reads: the server waits on us
                data = sock.recv(4096)
                assert data, "the server closed the connection"
                received += data
            line, _, reader.buffer = received.partition(b"\n")
            assert line == big
            assert reader.line() == b"after"
            writer.join(WAIT)
    shown = log.wait_for(lambda entry: entry.endswith(" characters)"))
    assert shown == f"Received: {big[:200].decode()}... ({len(big)} characters)"


# --- concurrency and fairness ---------------------------------------------------------
@pytest.mark.many_sockets
def test_a_thousand_concurrent_connections_each_get_their_own_replies(serve: Serve) -> None:
    count = 1000
    # Strict framing: on a loaded machine the gap between the two halves of
    # a line can exceed the flush delay, which would (correctly) flush it.
    with serve(port=0, flush_after=0) as server:
        socks = [connect(server.address) for _ in range(count)]
        try:
            readers = [LineReader(sock) for sock in socks]
            for round_number in range(3):
                # Half a line on every connection first, so every server-side
                # framer holds a partial line while the others are served.
                for i, sock in enumerate(socks):
                    sock.sendall(f"client {i} ".encode())
                for sock in socks:
                    sock.sendall(f"round {round_number}\n".encode())
                for i, reader in enumerate(readers):
                    assert reader.line() == f"client {i} round {round_number}".encode()
            assert server.open_connections == count
        finally:
            for sock in socks:
                sock.close()


def test_hundreds_of_threaded_clients_interleave_without_mixing(serve: Serve) -> None:
    clients, messages = 200, 50
    failures: list[str] = []
    start = threading.Barrier(clients)

    def talk(n: int) -> None:
        try:
            with Client(*address, timeout=WAIT) as client:
                start.wait(timeout=WAIT)
                for i in range(messages):
                    expected = f"client {n} message {i}"
                    if i % 2:
                        got = client.request("echo", text=expected)["text"]
                    else:
                        got = client.send_text(expected)
                    if got != expected:
                        failures.append(f"{expected!r} -> {got!r}")
        except Exception as exc:  # reported below, not lost in a thread
            failures.append(f"client {n}: {exc!r}")

    address: tuple[str, int]
    with serve(port=0) as server:
        address = server.address
        threads = [threading.Thread(target=talk, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert server.total_messages == clients * messages
    assert not failures, failures[:5]


def test_an_idle_or_stuck_client_does_not_delay_another(serve: Serve) -> None:
    with serve(port=0) as server:
        # One client sends half a line and stalls; another floods us and never reads.
        staller = connect(server.address)
        staller.sendall(b"half a line, then nothing")
        flooder = connect(server.address)
        flooder.setblocking(False)
        chunk = b"flood line that is never read back\n" * 1000
        flood_sent = 0
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:  # until the kernel buffers are full
            try:
                flood_sent += flooder.send(chunk)
            except BlockingIOError:
                break
        assert flood_sent > 0
        try:
            with Client(*server.address, timeout=2.0) as prompt:
                started = time.monotonic()
                for i in range(20):
                    assert prompt.send_text(f"quick {i}") == f"quick {i}"
                assert time.monotonic() - started < 2.0
        finally:
            staller.close()
            flooder.close()


def test_a_client_that_stops_reading_gets_every_reply_later(serve: Serve) -> None:
    """One line at a time (the server's fast path) until back-pressure stops it."""
    line = b"r" * 7999 + b"\n"
    with serve(port=0) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(server.address)
        with sock:
            sent = 0
            while sent < 20_000:
                sock.sendall(line)
                sent += 1
                deadline = time.monotonic() + 0.5
                while server.total_messages < sent and time.monotonic() < deadline:
                    time.sleep(0.0005)  # polling a real condition, bounded
                if server.total_messages < sent:
                    break  # the server stopped reading us: back-pressure
            assert sent < 20_000, "the server never applied back-pressure"
            sock.settimeout(WAIT)
            reader = LineReader(sock)
            for _ in range(sent):
                assert reader.line() + b"\n" == line
            assert round_trip(sock, b"after\n") == b"after"


def test_ctrl_c_is_noticed_even_when_no_signal_interrupts_the_wait() -> None:
    """On Windows Ctrl+C cannot interrupt select(): the loop must come back
    to Python within its poll interval. interrupt_main() raises
    KeyboardInterrupt the same way, without a real signal to cut the wait
    short, so this checks that bound on any platform."""
    import _thread
    import linecache

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is only raised in the main thread")
    main_id = threading.main_thread().ident
    pressed_at: list[float] = []

    def waiting_in_poll() -> bool:
        assert main_id is not None
        frame = sys._current_frames().get(main_id)
        while frame is not None and frame.f_code.co_name != "serve_forever":
            frame = frame.f_back
        if frame is None:
            return False
        return "poll(timeout)" in linecache.getline(frame.f_code.co_filename, frame.f_lineno)

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + WAIT
        while not waiting_in_poll():  # a real condition, bounded
            assert time.monotonic() < deadline, "the loop never started waiting"
            time.sleep(0.001)
        pressed_at.append(time.monotonic())
        _thread.interrupt_main()

    # interrupt_main() does nothing while SIGINT is ignored, which is how a
    # process started from a shell's background job (or some CI runners) begins.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.ExitStack() as restore:
        restore.callback(signal.signal, signal.SIGINT, previous)
        _serve_until_interrupted(press_ctrl_c, pressed_at)


def _serve_until_interrupted(press_ctrl_c: Callable[[], None], pressed_at: list[float]) -> None:
    with Server(port=0) as server:
        presser = threading.Thread(target=press_ctrl_c, daemon=True)
        presser.start()
        # If the interrupt is lost, stop the loop anyway: a failure, not a hung suite.
        watchdog = threading.Timer(3 * WAIT, server.shutdown)
        watchdog.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                server.serve_forever(poll_interval=0.2)
        finally:
            watchdog.cancel()
        stopped = time.monotonic()
        presser.join(WAIT)
    assert pressed_at and stopped - pressed_at[0] < 0.6


def test_shutdown_is_prompt_and_close_disconnects_clients() -> None:
    server = Server(port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 30})
    thread.start()
    assert server.wait_serving(WAIT)
    sock = connect(server.address)
    assert round_trip(sock, b"hi\n") == b"hi"
    started = time.monotonic()
    server.shutdown()  # wakes the loop even with a 30 s poll interval
    assert time.monotonic() - started < 1.0
    thread.join(WAIT)
    assert not thread.is_alive()
    server.close()
    assert LineReader(sock).at_eof()
    sock.close()


def test_running_server_runs_a_named_thread_and_stops_it(serve: Serve) -> None:
    with serve(port=0) as server:
        assert server.wait_serving(0)
        names = [thread.name for thread in threading.enumerate()]
        assert f"spike-server-{server.address[1]}" in names
    assert not server.wait_serving(0)
    assert f"spike-server-{server.address[1]}" not in [t.name for t in threading.enumerate()]


def test_idle_timeout_closes_silent_connections_only(serve: Serve) -> None:
    log = LogCapture()
    clock = FakeClock()
    with serve(port=0, idle_timeout=0.5, log=log, clock=clock, poll_interval=FAKE_POLL) as server:
        silent = connect(server.address)
        busy = connect(server.address)
        wait_until(lambda: server.open_connections == 2)
        clock.advance(0.3)
        assert round_trip(busy, b"ping\n") == b"ping"  # busy is active at 0.3 s
        clock.advance(0.3)  # 0.6 s: silent is past the timeout, busy is not
        assert LineReader(silent).at_eof()
        assert round_trip(busy, b"still open\n") == b"still open"
        assert server.open_connections == 1
        log.wait_for(
            lambda line: (
                line.startswith("Connection closed") and "(0 messages; idle for 0.5 s)" in line
            )
        )
        silent.close()
        busy.close()


def test_idle_timeout_runs_on_the_real_clock(serve: Serve) -> None:
    """The real thing, once: a silent connection closes after idle_timeout."""
    with serve(port=0, idle_timeout=0.2) as server, connect(server.address) as sock:
        started = time.monotonic()
        assert LineReader(sock).closed_by_peer()
        assert 0.15 < time.monotonic() - started < WAIT


def test_idle_timeout_says_when_it_drops_an_unfinished_line(serve: Serve) -> None:
    log = LogCapture()
    clock = FakeClock()
    with (
        serve(
            port=0, idle_timeout=0.3, flush_after=0, log=log, clock=clock, poll_interval=FAKE_POLL
        ) as server,
        connect(server.address) as sock,
    ):
        local = "{}:{}".format(*sock.getsockname()[:2])
        assert round_trip(sock, b"one\n") == b"one"
        sock.sendall(b"half a line")
        wait_until(lambda: server.buffered_bytes == len(b"half a line"))
        clock.advance(0.3)
        assert LineReader(sock).closed_by_peer()
    closed = log.wait_for(lambda line: line.startswith("Connection closed"))
    assert closed == (
        f"Connection closed: {local} (1 message; idle for 0.3 s; "
        "11 bytes of an unfinished line dropped)"
    )


def test_idle_timeout_closes_a_client_that_stopped_reading_its_replies(serve: Serve) -> None:
    log = LogCapture()
    clock = FakeClock()
    with serve(
        port=0,
        idle_timeout=0.3,
        max_line_bytes=2_000_000,
        log=log,
        clock=clock,
        poll_interval=FAKE_POLL,
    ) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(server.address)
        sock.settimeout(WAIT)
        with sock:
            local = "{}:{}".format(*sock.getsockname()[:2])
            sock.sendall(b"q" * 999 + b"\n" + b"s" * 2_000_000 + b"\n")  # never read
            wait_until(lambda: server.total_messages == 2)
            # Each idle check that finds the kernel's queue changed counts as
            # traffic; once nothing moves, the next one closes.
            deadline = time.monotonic() + WAIT
            while server.open_connections:
                assert time.monotonic() < deadline, "the connection was not closed"
                clock.advance(0.3)
                settle()
            closed = log.wait_for(lambda line: line.startswith("Connection closed"))
    assert closed.startswith(f"Connection closed: {local} (2 messages; idle for 0.3 s; ")
    assert closed.endswith(" bytes of replies not delivered)")


def test_a_refused_client_is_closed_after_the_linger_not_before(serve: Serve) -> None:
    """After a fatal error reply the server reads and drops input for
    _LINGER_SECONDS (so the reply is not destroyed by a reset), then closes."""
    from spike.server._loop import _LINGER_SECONDS

    clock = FakeClock()
    with (
        serve(port=0, max_line_bytes=10, clock=clock, poll_interval=FAKE_POLL) as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b"x" * 11)
        reader = LineReader(sock)
        assert json.loads(reader.line())["error"]["code"] == "line_too_long"
        assert reader.at_eof()  # the server stopped sending ...
        sock.sendall(b"ignored\n")  # ... but still reads (and drops) input
        clock.advance(_LINGER_SECONDS * 0.75)
        settle()
        assert server.open_connections == 1
        deadline = time.monotonic() + WAIT
        while server.open_connections:
            assert time.monotonic() < deadline, "the lingering connection was not closed"
            clock.advance(_LINGER_SECONDS / 2)
            settle()


@pytest.mark.skipif(
    sys.platform == "win32", reason="Windows cannot tell how much a socket has yet to deliver"
)
def test_idle_timeout_spares_a_client_still_reading_its_replies(serve: Serve) -> None:
    """Traffic in either direction counts: while the server is still sending
    replies to a slow reader, the connection is not idle."""
    idle = 0.3
    line = b"p" * 999 + b"\n"
    count = 1500  # 1.5 MB of replies, far more than the socket buffers hold
    log = LogCapture()
    clock = FakeClock()
    with serve(port=0, idle_timeout=idle, log=log, clock=clock, poll_interval=FAKE_POLL) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.connect(server.address)
        sock.settimeout(WAIT)
        with sock:
            writer = threading.Thread(target=sock.sendall, args=(line * count,), daemon=True)
            writer.start()
            started = clock.now
            received = 0
            while received < len(line) * count:
                data = sock.recv(65536)
                assert data, f"closed as idle after {received} of {len(line) * count} bytes"
                received += len(data)
                clock.advance(idle / 3)  # a slow reader: a third of the timeout per read
                time.sleep(0.001)  # and a moment for the server's loop to see it
            assert clock.now - started > 10 * idle  # it did outlive the timeout, many times
            writer.join(WAIT)
            assert round_trip(sock, b"still open\n") == b"still open"
        log.wait_for(lambda entry: entry.startswith("Connection closed"))
    assert not any("idle for" in entry for entry in log.lines)


def test_op_can_use_the_connection_context(serve: Serve) -> None:
    ops = OpRegistry()
    ops.op("whoami")(lambda params, ctx: {"peer": list(ctx.peer), "messages": ctx.messages})
    with serve(port=0, ops=ops) as server, Client(*server.address) as client:
        client.send_text("one")
        reply = client.request("whoami")
        assert reply["messages"] == 2
        assert client._sock is not None
        assert reply["peer"][1] == client._sock.getsockname()[1]


# --- robustness -------------------------------------------------------------------
def _with_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plant a bug in the connection's read handler, set off by a client sending "crash"."""
    on_readable = Connection.on_readable

    def buggy(self: Connection) -> None:
        if self.sock.recv(5, socket.MSG_PEEK) == b"crash":
            raise RuntimeError("bug in the handler")
        on_readable(self)

    monkeypatch.setattr(Connection, "on_readable", buggy)


def test_a_crashing_connection_handler_costs_only_its_client(
    log: LogCapture,
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
) -> None:
    _with_a_bug(monkeypatch)
    with serve(port=0, log=log) as server:
        socks = [connect(server.address) for _ in range(6)]
        for i, sock in enumerate(socks):
            sock.sendall(b"crash\n" if i % 2 else b"hi\n")
        for i, sock in enumerate(socks):
            reader = LineReader(sock)
            if i % 2:  # closed with unread input: EOF or a reset
                assert reader.closed_by_peer()
            else:
                assert reader.line() == b"hi"
            sock.close()
        with Client(*server.address) as client:
            assert client.send_text("server still up") == "server still up"
    assert any("RuntimeError: bug in the handler" in line for line in log.lines)


def test_errors_reach_the_error_log_when_the_event_log_is_off(
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
) -> None:
    _with_a_bug(monkeypatch)
    ops = default_ops.copy()
    ops.op("boom")(lambda params, ctx: 1 / 0)
    errors = LogCapture()
    with serve(port=0, max_line_bytes=20, ops=ops, error_log=errors) as server:
        with connect(server.address) as sock:
            reply = round_trip(sock, b'{"op":"boom"}\n')
            assert error_of(reply)["error"]["code"] == "op_failed"
            assert (
                error_of(round_trip(sock, b"x" * 21 + b"\n"))["error"]["code"] == "line_too_long"
            )
        with connect(server.address) as sock:
            sock.sendall(b"crash\n")
            assert LineReader(sock).closed_by_peer()
        errors.wait_for(lambda line: "RuntimeError: bug in the handler" in line)
    assert len(errors.lines) == 3
    assert all(line.startswith("Error: ") for line in errors.lines)
    assert "op 'boom' failed: ZeroDivisionError: division by zero" in errors.lines[0]
    assert "sent a line longer than 20 bytes" in errors.lines[1]


def test_a_failing_log_callable_does_not_stop_the_server(serve: Serve) -> None:
    def broken_log(line: str) -> None:
        raise OSError("stdout is gone")

    with serve(port=0, log=broken_log) as server, Client(*server.address) as client:
        assert client.send_text("logged nowhere") == "logged nowhere"
        assert client.request("echo", text="fine") == {"text": "fine"}


def test_portable_select_poller() -> None:
    """The selectors-based loop (macOS's, with kqueue there), run here with select()."""
    import selectors

    from spike.server._poller import SelectorPoller

    poller = SelectorPoller(selectors.SelectSelector)
    with running_server(port=0, max_line_bytes=1000, poller=poller) as server:
        assert isinstance(server._poller, SelectorPoller)
        socks = [connect(server.address) for _ in range(100)]
        try:
            for i, sock in enumerate(socks):
                sock.sendall(f"client {i}\n".encode())
            for i, sock in enumerate(socks):
                assert LineReader(sock).line() == f"client {i}".encode()
            # Flush-after, a big pipelined burst (partial sends) and a closing error.
            socks[0].sendall(b"no newline")
            assert LineReader(socks[0]).line() == b"no newline"
            burst = [f"{n:05d}" * 100 for n in range(2000)]
            socks[1].sendall("".join(b + "\n" for b in burst).encode())
            reader = LineReader(socks[1])
            assert [reader.line().decode() for _ in burst] == burst
            socks[2].sendall(b"x" * 1001)
            reader = LineReader(socks[2])
            assert json.loads(reader.line())["error"]["code"] == "line_too_long"
            assert reader.at_eof()
        finally:
            for sock in socks:
                sock.close()


def test_grouped_select_poller_serves_more_clients_than_one_select_takes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The Windows loop: select() takes at most 512 sockets there, so the
    poller watches them in groups (here groups of 40, with 150 clients)."""
    import spike.server._poller
    from spike.server._poller import GroupedSelectPoller

    real_select = select.select
    largest: list[int] = [0]

    def counting_select(readers, writers, errors, timeout):
        largest[0] = max(largest[0], len(readers), len(writers))
        return real_select(readers, writers, errors, timeout)

    monkeypatch.setattr(spike.server._poller.select, "select", counting_select)
    poller = GroupedSelectPoller(group_size=40)
    with running_server(port=0, max_line_bytes=1000, poller=poller) as server:
        assert isinstance(server._poller, GroupedSelectPoller)
        socks = [connect(server.address) for _ in range(150)]
        try:
            readers = [LineReader(sock) for sock in socks]
            for i, sock in enumerate(socks):
                sock.sendall(f"client {i} ".encode())
            for sock in socks:
                sock.sendall(b"says hi\n")
            for i, reader in enumerate(readers):
                assert reader.line() == f"client {i} says hi".encode()
            # In the last group: flush-after, a pipelined burst that needs
            # write interest, and an error that closes the connection.
            socks[-1].sendall(b"no newline")
            assert readers[-1].line() == b"no newline"
            burst = [f"{n:05d}" * 100 for n in range(2000)]
            socks[-2].sendall("".join(b + "\n" for b in burst).encode())
            assert [readers[-2].line().decode() for _ in burst] == burst
            socks[-3].sendall(b"x" * 1001)
            assert json.loads(readers[-3].line())["error"]["code"] == "line_too_long"
            assert readers[-3].at_eof()
        finally:
            for sock in socks:
                sock.close()
        started = time.monotonic()
    # Leaving the with block shut the server down: prompt with several groups too.
    assert time.monotonic() - started < 1.0
    assert 0 < largest[0] <= 40


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE on Windows")
def test_out_of_file_descriptors_new_clients_wait_not_fail(server_process) -> None:
    """Past the open-file limit the server stops accepting for a moment; the
    clients wait in the listen queue and are served once others leave."""
    limit = 40
    # A hard limit the server cannot lift, set before it starts.
    prelude = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        "from spike.cli import server_main as main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    proc = server_process("--port", "0", python_args=["-c", prelude])
    address = ("127.0.0.1", proc.port)
    socks = [connect(address) for _ in range(limit)]
    try:
        opened = set()
        while True:
            line = proc.next_line()
            if line.startswith("Connection opened: "):
                opened.add(int(line.rsplit(":", 1)[1]))
            elif line.startswith("Error: cannot accept a connection"):
                break
        accepted = [sock for sock in socks if sock.getsockname()[1] in opened]
        waiting = [sock for sock in socks if sock.getsockname()[1] not in opened]
        assert accepted and waiting
        for sock in socks:
            sock.sendall(b"hi\n")
        for sock in accepted:
            assert LineReader(sock).line() == b"hi"
        for sock in accepted:
            sock.close()
        for sock in waiting:  # accepted now that descriptors are free
            assert LineReader(sock).line() == b"hi"
        # One line when the episode starts (not one per retry), one when it ends.
        later: list[str] = []
        while not later or later[-1] != "Accepting new connections again":
            later.append(proc.next_line())
        assert not [line for line in later if line.startswith("Error: cannot accept")], later
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE on Windows")
def test_quiet_server_still_reports_running_out_of_file_descriptors(server_process) -> None:
    limit = 30
    prelude = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        "from spike.cli import server_main as main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    proc = server_process("--port", "0", "--quiet", python_args=["-c", prelude])
    socks = [connect(("127.0.0.1", proc.port)) for _ in range(limit)]
    try:
        error = proc.next_error_line()
        assert error.startswith("Error: cannot accept a connection"), error
    finally:
        for sock in socks:
            sock.close()
    proc.proc.kill()
    assert proc.rest() == []  # no per-connection lines on stdout


def test_an_op_failure_is_logged_with_op_and_request_id(log: LogCapture, serve: Serve) -> None:
    ops = default_ops.copy()
    ops.op("crash")(lambda params, ctx: 1 / 0)
    with (
        serve(port=0, ops=ops, log=log, op_tracebacks=True) as server,
        connect(server.address) as sock,
    ):
        reply = error_of(round_trip(sock, b'{"op": "crash", "id": "r7"}\n'))
        assert reply["error"]["code"] == "op_failed"
    (line,) = [line for line in log.lines if line.startswith("Error:")]
    assert "op 'crash' failed" in line and '(request id "r7")' in line
    assert "ZeroDivisionError: division by zero" in line
    assert any(line.startswith("  Traceback") for line in log.lines)


def test_the_server_package_imports_one_way() -> None:
    """The loop drives connections and connections report back through an
    interface (ConnectionHost): _connection imports nothing of _loop, and no
    module of spike/server imports another that imports it back."""
    import ast

    paths = {path.stem: path for path in (ROOT / "spike" / "server").glob("*.py")}
    graph = {
        name: {
            node.module
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in paths
        }
        for name, path in paths.items()
    }
    assert graph["_loop"] >= {"_connection"}
    assert "_loop" not in graph["_connection"]

    def reaches(start: str, goal: str, seen: frozenset[str] = frozenset()) -> bool:
        return any(
            step == goal or (step not in seen and reaches(step, goal, seen | {step}))
            for step in graph[start]
        )

    assert not [name for name in graph if reaches(name, name)], graph


def test_a_bug_that_cuts_close_short_leaves_nothing_in_the_budget(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler bug, then a close() that fails too: the server still takes the
    connection's held input off its total."""
    on_readable, close = Connection.on_readable, Connection.close

    def buggy_read(self: Connection) -> None:
        on_readable(self)
        if self.buffered:  # an unfinished line is held: now the bug
            raise RuntimeError("bug in the handler")

    def failing_close(self: Connection, note: str = "") -> None:
        if self.buffered:
            raise RuntimeError("bug in close")
        close(self, note)

    monkeypatch.setattr(Connection, "on_readable", buggy_read)
    monkeypatch.setattr(Connection, "close", failing_close)
    with serve(port=0, flush_after=0) as server, connect(server.address) as sock:
        sock.sendall(b"no newline yet")
        assert LineReader(sock).closed_by_peer()
        wait_until(lambda: server.open_connections == 0)
        assert server.buffered_bytes == 0
