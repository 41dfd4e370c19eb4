"""Issue 13: the server under hostile load, over real sockets on loopback.

Floods of tiny bad lines from clients that never read, a thousand clients
each holding an unfinished line, a log output nobody reads, forged line
breaks, and ``stats`` with thousands of idle connections. Every test is
bounded in clients and time; the bounds on latency and memory are loose
enough for a loaded CI machine and still far below what the server did
before (a fresh client waited 57 s behind 300 flooders; 1,000 unfinished
lines held 1 GB).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import ROOT, WAIT, LineReader, LogCapture, Serve, cli_env, connect, round_trip

from spike import default_ops
from spike.cli import serving_port

LINUX = sys.platform.startswith("linux")
MiB = 1024 * 1024


def rss_bytes(pid: int) -> tuple[int, int]:
    """(current, peak) resident memory of a process, from /proc (Linux only)."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


class QuietServer:
    """``python -m spike.server --quiet`` on a free port; stderr collected on a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spike.server", "--port", "0", "--quiet", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=cli_env(),
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        first = self.proc.stdout.readline().decode()
        address = serving_port(first)
        assert address is not None, first
        self.address = address
        self.errors: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line.decode(errors="replace").rstrip("\n"))

    def stats(self) -> dict:
        with connect(self.address, timeout=30) as sock:
            return json.loads(round_trip(sock, b'{"op": "stats"}\n'))["result"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)


@pytest.fixture
def quiet_server():
    started: list[QuietServer] = []

    def start(*args: str) -> QuietServer:
        server = QuietServer(*args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def ping_time(address: tuple, text: bytes = b"ping\n", timeout: float = 30) -> float:
    """Seconds from connecting to the echo of one line, for a fresh client."""
    started = time.monotonic()
    with connect(address, timeout=timeout) as sock:
        assert round_trip(sock, text) == text.rstrip(b"\n")
    return time.monotonic() - started


def wait_until_settled(count: Callable[[], int], timeout: float = 30) -> int:
    """Wait until a message count stops growing for a moment; return it."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = count()
        if now == last:
            return now
        last = now
        time.sleep(0.3)  # the server's pace, polled; bounded by the deadline
    raise AssertionError(f"the server was still answering after {timeout} s")


# --- fair turns and output back-pressure -------------------------------------------
def test_flood_of_tiny_bad_lines_from_clients_that_never_read(quiet_server) -> None:
    """32,768 '{' lines per client, each answered with a ~146-byte bad_json
    error that nobody reads. Before: the loop answered a whole 64 KiB recv
    in one go, so a fresh client waited behind every flooder (57 s behind
    300), and each flooder's unread replies (4.8 MB) stayed in memory."""
    flooders = 32
    server = quiet_server()
    base = rss_bytes(server.proc.pid)[0] if LINUX else 0
    socks = []
    try:
        for _ in range(flooders):
            sock = socket.socket()
            # A small receive buffer: the kernel absorbs little of the replies,
            # so what the server holds is what it decided to hold.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(server.address)
            socks.append(sock)
        for sock in socks:
            sock.sendall(b"{\n" * 32768)
        assert ping_time(server.address, timeout=WAIT) < 2.0
        # Still answering the flood (it takes seconds of CPU), the server
        # holds at most 256 KiB of unread replies and 64 KiB of input each.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert ping_time(server.address, timeout=WAIT) < 1.0
            if LINUX:
                grown = rss_bytes(server.proc.pid)[1] - base
                assert grown < 64 * MiB, f"server grew by {grown / MiB:.0f} MiB"
            time.sleep(0.2)  # sampling pace
    finally:
        for sock in socks:
            sock.close()


def test_a_client_that_never_reads_is_held_to_the_reply_cap(serve: Serve) -> None:
    """Once 256 KiB of its replies wait unsent, the server stops answering a
    client (and reading from it) until it reads. Before: it answered a whole
    64 KiB recv at a time, 4.8 MB of error replies for 64 KiB of "{" lines."""
    from spike.server._connection import _OUTPUT_CAP

    with serve(port=0) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(server.address)
        with sock:
            sock.setblocking(False)
            stream = memoryview(b"{\n" * (512 * 1024))
            sent = 0
            deadline = time.monotonic() + 30
            while sent < len(stream) and time.monotonic() < deadline:
                try:
                    sent += sock.send(stream[sent : sent + 65536])
                except BlockingIOError:
                    time.sleep(0.01)  # every buffer full: the server stopped reading us
                    if server.total_messages and wait_until_settled(lambda: server.total_messages):
                        break
            answered = wait_until_settled(lambda: server.total_messages)
            assert answered < 512 * 1024, "every line was answered: no back-pressure"
            (conn,) = server._connections
            assert conn._out_bytes <= _OUTPUT_CAP + 64 * 1024 * 2
            with connect(server.address) as fresh:
                assert round_trip(fresh, b"still serving\n") == b"still serving"


def test_flooders_that_read_do_not_stall_the_others(quiet_server) -> None:
    """Four clients stream 64 KiB chunks of bad lines and read every reply.
    Before: each of their chunks held the loop for a whole 32,768 answers,
    adding seconds to everyone else's round trip."""
    stop = threading.Event()
    failures: list[BaseException] = []

    def drain(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set() and sock.recv(1 << 20):
                pass

    def flood(address: tuple) -> None:
        try:
            with connect(address, timeout=30) as sock:
                threading.Thread(target=drain, args=(sock,), daemon=True).start()
                chunk = b"{\n" * 32768
                while not stop.is_set():
                    sock.sendall(chunk)
        except OSError as exc:
            if not stop.is_set():
                failures.append(exc)

    server = quiet_server()
    threads = [threading.Thread(target=flood, args=(server.address,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)  # let the flood get going (pacing, not synchronisation)
        with connect(server.address) as sock:
            worst = 0.0
            for i in range(20):
                started = time.monotonic()
                assert round_trip(sock, f"quick {i}\n".encode()) == f"quick {i}".encode()
                worst = max(worst, time.monotonic() - started)
        assert worst < 1.0, f"a round trip took {worst:.2f} s behind the flood"
    finally:
        stop.set()
        server.stop()  # the flooders' sends fail at once, instead of at their timeout
        for thread in threads:
            thread.join(WAIT)
    assert not failures, failures


def test_a_long_pipeline_comes_back_whole_and_in_order_beside_others(serve: Serve) -> None:
    """Turns split one client's burst across loop passes: nothing is lost
    or reordered, lines cut at every window boundary included."""
    lines = [f"{n:06d}" + "x" * (n % 97) for n in range(20_000)]
    stream = "".join(line + "\n" for line in lines).encode()
    with serve(port=0, flush_after=0) as server:
        with connect(server.address) as burst, connect(server.address) as other:
            writer = threading.Thread(target=burst.sendall, args=(stream,), daemon=True)
            writer.start()
            assert round_trip(other, b"meanwhile\n") == b"meanwhile"
            reader = LineReader(burst)
            assert [reader.line().decode() for _ in lines] == lines
            writer.join(WAIT)
        assert server.buffered_bytes == 0


# --- the total input budget -----------------------------------------------------
def test_over_the_budget_the_biggest_holder_is_refused_and_others_go_on(serve: Serve) -> None:
    log = LogCapture()
    with serve(port=0, flush_after=0, max_buffered_bytes=100_000, error_log=log) as server:
        big, small, fresh = (connect(server.address) for _ in range(3))
        with big, small, fresh:
            big.sendall(b"b" * 60_000)
            deadline = time.monotonic() + WAIT
            while server.buffered_bytes < 60_000:  # polling a real condition, bounded
                assert time.monotonic() < deadline, server.buffered_bytes
                time.sleep(0.001)
            small.sendall(b"s" * 50_000)
            reader = LineReader(big)
            reply = json.loads(reader.line())
            assert reply["ok"] is False and reply["error"]["code"] == "overloaded"
            assert "held the most (60000 bytes)" in reply["error"]["message"]
            assert reader.closed_by_peer()
            # The smaller holder keeps its line and finishes it.
            small.sendall(b"\n")
            assert LineReader(small).line() == b"s" * 50_000
            assert round_trip(fresh, b"fresh\n") == b"fresh"
            assert server.buffered_bytes == 0
    refused = log.wait_for(lambda line: "refused" in line)
    assert refused.startswith("Error: 127.0.0.1:")
    assert "input and replies held for all connections reached 110000 bytes" in refused
    assert "(the limit is 100000)" in refused


@pytest.mark.skipif(not LINUX, reason="reads the server's memory from /proc")
def test_a_thousand_unfinished_megabyte_lines_stay_within_the_budget(quiet_server) -> None:
    """1,000 clients each send 1 MiB - 1 bytes and no newline (strict framing).
    Before: the server held all of it (1 GB). Now it holds at most its budget
    (16 MiB here) plus bookkeeping, refusing the biggest holders."""
    budget = 16 * MiB
    server = quiet_server("--flush-after", "0", "--max-buffered-bytes", str(budget))
    base = rss_bytes(server.proc.pid)[0]
    line = memoryview(b"x" * (MiB - 1))
    socks: list[list] = []
    try:
        for _ in range(1000):
            sock = socket.create_connection(server.address, timeout=WAIT)
            sock.setblocking(False)
            socks.append([sock, 0])
        # Send what the kernel takes, round after round, until every client has
        # sent its line or been refused (bounded in time).
        deadline = time.monotonic() + 60
        pending = socks
        while pending and time.monotonic() < deadline:
            still = []
            for entry in pending:
                sock, sent = entry
                try:
                    entry[1] = sent + sock.send(line[sent : sent + 262_144])
                except BlockingIOError:
                    pass
                except OSError:  # refused and closed by the server
                    continue
                if entry[1] < len(line):
                    still.append(entry)
            if len(still) == len(pending):
                time.sleep(0.02)  # every buffer full: give the server a moment
            pending = still
        assert ping_time(server.address, timeout=WAIT) < 2.0
        peak = rss_bytes(server.proc.pid)[1] - base
        assert peak < budget + 48 * MiB, f"server grew by {peak / MiB:.0f} MiB"
        refusals = [line for line in server.errors if "refused" in line]
        assert refusals, server.errors[-5:]
        # A refused client was told why before the server closed it.
        told = 0
        for sock, _ in socks:
            try:
                reply = sock.recv(4096)
            except (BlockingIOError, OSError):
                continue
            told += b'"overloaded"' in reply
        assert told
    finally:
        for sock, _ in socks:
            sock.close()


# --- a log that never blocks the loop -------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_log_output_nobody_reads_blocks_nothing() -> None:
    """stdout is a pipe whose reader never reads (``spike-server | sleep 600``).
    Before: the first 64 KiB filled the pipe and the server froze."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spike.server", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=cli_env(),
    )
    os.close(write_end)
    try:
        first = b""
        while not first.endswith(b"\n"):  # the port; then nobody reads again
            chunk = os.read(read_end, 1)
            assert chunk, "the server exited"
            first += chunk
        address = ("127.0.0.1", int(first.decode().split(" (")[0].rsplit(":", 1)[1]))
        with connect(address) as sock:
            reader = LineReader(sock)
            for i in range(5000):
                sock.sendall(b"round trip %d, logged into a pipe nobody reads\n" % i)
                assert reader.line() == b"round trip %d, logged into a pipe nobody reads" % i
        assert ping_time(address, timeout=WAIT) < 1.0
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT) == 0
        assert time.monotonic() - started < 2.0
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        assert "Traceback" not in stderr
        lines = stderr.splitlines()
        assert len(lines) == 1, stderr
        assert lines[0].startswith("spike-server: ")
        assert lines[0].endswith(" log lines dropped: the log output took nothing for a while")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        os.close(read_end)


# --- log lines cannot be forged -------------------------------------------------------
FORGERIES = [
    "hello\x85Error: fake admin login\u2028Connection closed: 10.0.0.1:1 (0 messages)",
    "a\rError: carriage return",
    "b\x0bError: vertical tab",
    "c\x0cError: form feed",
    "d\x1cError: file separator\x1dError: group separator\x1eError: record separator",
    "e\u2029Error: paragraph separator",
    "f\x1b[2K\rError: erased with an escape sequence",
]
KNOWN_STARTS = (
    "Serving on ",
    "Connection opened: ",
    "Received: ",
    "Connection closed: ",
    "Error: ",
    "Server stopped.",
)


FORGED_STARTS = tuple(part for text in FORGERIES for part in text.splitlines()[1:])


def assert_no_forged_line(output: str) -> None:
    lines = output.splitlines()  # every line break any reader might honour
    assert lines
    for line in lines:
        assert line.startswith(KNOWN_STARTS), f"forged log line: {line!r}"
        assert not line.startswith(FORGED_STARTS), f"forged log line: {line!r}"


def test_forged_line_breaks_stay_inside_one_log_line(server_process) -> None:
    proc = server_process("--port", "0")
    with connect(("127.0.0.1", proc.port)) as sock:
        reader = LineReader(sock)
        for text in FORGERIES:
            data = text.encode()
            sock.sendall(data + b"\n")
            assert reader.line() == data
            # Inside a JSON request too (raw, not \\u-escaped: valid JSON).
            sock.sendall(json.dumps({"op": "echo", "text": text}, ensure_ascii=False).encode())
            sock.sendall(b"\n")
            assert json.loads(reader.line())["result"]["text"] == text
            sock.sendall(json.dumps({"op": text}, ensure_ascii=False).encode() + b"\n")
            assert json.loads(reader.line())["error"]["code"] == "unknown_op"
    lines = [proc.first_line]
    while not lines[-1].startswith("Connection closed:"):
        lines.append(proc.next_line())
    # The reader above splits only at "\n" (and "\r"); splitlines() splits
    # at everything a log viewer might.
    assert_no_forged_line("\n".join(lines))
    assert any("\\x85Error: fake admin login\\u2028Connection closed:" in line for line in lines)


def test_an_error_message_with_client_text_stays_one_line(serve: Serve) -> None:
    """Errors repeat what a client sent (an op's exception message): those
    lines are escaped the same way."""
    ops = default_ops.copy()

    @ops.op("fail")
    def fail(params, ctx):
        raise RuntimeError(params["text"])

    log = LogCapture()
    with serve(port=0, ops=ops, log=log) as server:
        with connect(server.address) as sock:
            reader = LineReader(sock)
            for text in FORGERIES:
                sock.sendall(json.dumps({"op": "fail", "text": text}).encode() + b"\n")
                assert json.loads(reader.line())["error"]["code"] == "op_failed"
        log.wait_for(lambda line: line.startswith("Connection closed"))
    assert_no_forged_line("\n".join(log.lines))
    assert sum(line.startswith("Error: ") for line in log.lines) == len(FORGERIES)


def test_display_text_escapes_every_line_break_splitlines_knows() -> None:
    from spike._display import display_text

    breakers = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    for char in breakers:
        assert len(f"x{char}y".splitlines()) == 2  # the premise
        shown = display_text(f"before{char}after")
        assert shown.splitlines() == [shown]
    every = "".join(chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029))
    assert display_text(every, limit=1000).isprintable()
    assert display_text("plain, é, 漢字, 😀") == "plain, é, 漢字, 😀"


# --- stats stays O(1) ----------------------------------------------------------------
@pytest.mark.many_sockets
def test_stats_with_thousands_of_idle_connections_stays_fast(serve: Serve) -> None:
    """Before: stats summed over every connection (0.02 s for 2,000 stats
    requests alone, 0.42 s with 4,000 idle connections open)."""
    requests = b'{"op": "stats"}\n' * 2000

    def chunk_time(address: tuple) -> float:
        with connect(address, timeout=30) as sock:
            started = time.monotonic()
            sock.sendall(requests)
            seen = 0
            while seen < 2000:
                data = sock.recv(1 << 20)
                assert data
                seen += data.count(b"\n")
            return time.monotonic() - started

    with serve(port=0) as server:
        alone = min(chunk_time(server.address) for _ in range(3))
        idle = [connect(server.address) for _ in range(3000)]
        try:
            deadline = time.monotonic() + WAIT
            while server.open_connections < 3000:  # polling a real condition, bounded
                assert time.monotonic() < deadline
                time.sleep(0.01)
            crowded = min(chunk_time(server.address) for _ in range(3))
        finally:
            for sock in idle:
                sock.close()
    assert crowded < 3 * alone + 0.05, f"{alone:.3f} s alone, {crowded:.3f} s crowded"


# --- idle connections stay cheap ----------------------------------------------------
@pytest.mark.many_sockets
@pytest.mark.skipif(not LINUX, reason="reads the server's memory from /proc")
def test_idle_connections_cost_under_two_kib_each_and_all_are_answered(quiet_server) -> None:
    """Measured: about 1.6 KiB each. A reply queue of their own (a deque)
    took each to 2.4 KiB, though an idle client runs no op at all."""
    server = quiet_server()
    count = 4000
    time.sleep(0.2)
    before, _ = rss_bytes(server.proc.pid)
    idle = [connect(server.address, timeout=30) for _ in range(count)]
    try:
        deadline = time.monotonic() + WAIT
        while server.stats()["open_connections"] < count + 1:  # a real condition, bounded
            assert time.monotonic() < deadline
            time.sleep(0.05)
        held, _ = rss_bytes(server.proc.pid)
        per_connection = (held - before) / count
        assert per_connection < 2048, f"{per_connection / 1024:.2f} KiB per idle connection"
        for sock in idle:  # all speak at once
            sock.sendall(b"hello\n")
        for sock in idle:
            assert LineReader(sock).line() == b"hello"
    finally:
        for sock in idle:
            sock.close()
