"""The connection core's promises about replies, over real sockets: replies
count against the per-client cap and the total budget, every line gets
exactly one reply, the log keeps what it can write, and stopping sends what
was answered. Each test reproduces a defect the code before the one-reply-path
rewrite had (issue 17)."""

from __future__ import annotations

import contextlib
import json
import selectors
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


def rss() -> int:
    """This process's resident memory now, from /proc (Linux only)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakMemory:
    """Samples this process's memory on a thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.start = rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss())

    def stop(self) -> int:
        """Stop sampling; how much the peak is above the start, in bytes."""
        self._stop.set()
        self._thread.join(WAIT)
        return self.peak - self.start


def big_ops(size: int, *, inline: bool = True):
    """An op "big" whose reply is ``size`` bytes of text, on the loop or a worker."""
    ops = default_ops.copy()
    ops.op("big", inline=inline)(lambda params, ctx: "x" * size)
    return ops


def non_reader(address: tuple) -> socket.socket:
    """A client with a small receive buffer that will never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    return sock


def echo_time(address: tuple) -> float:
    started = time.monotonic()
    with connect(address) as fresh:
        assert round_trip(fresh, b"fresh\n") == b"fresh"
    return time.monotonic() - started


@pytest.mark.skipif(not LINUX, reason="reads this process's memory from /proc")
def test_pipelined_big_replies_nobody_reads_stay_under_the_cap(serve: Serve) -> None:
    """300 pipelined calls for 1 MB replies, never read. Before: every call of
    a turn was answered before the cap was looked at (1,000 such calls built
    1.9 GB and stalled everyone for 4.6 s)."""
    with serve(port=0, ops=big_ops(1_000_000)) as server:
        memory = PeakMemory()
        with non_reader(server.address) as sock:
            sock.sendall(b'{"op": "big"}\n' * 300)
            time.sleep(0.5)  # time to build every reply, if it were going to
            took = echo_time(server.address)
            answered = server.total_messages
        grown = memory.stop()
    assert grown < 64 * MiB, f"memory grew by {grown / MiB:.0f} MiB"
    assert answered < 300 // 2, f"{answered} of 300 calls answered for a client that never reads"
    assert took < 0.5, f"a fresh client waited {took:.2f} s"


@pytest.mark.skipif(not LINUX, reason="reads this process's memory from /proc")
@pytest.mark.parametrize("budget", [32 * MiB, 4 * MiB], ids=["32MiB", "4MiB"])
@pytest.mark.parametrize("inline", [True, False], ids=["loop", "worker"])
def test_unsent_replies_count_against_the_total_budget(
    budget: int, inline: bool, serve: Serve
) -> None:
    """100 clients each ask for a 3 MB reply and never read. Before: replies
    were outside every budget (1,200 such clients took the server to 3.6 GB;
    nothing was refused or logged). The kernel takes most of each reply, so
    the 32 MiB budget may never be reached; the 4 MiB one is, and the
    biggest holders are refused, each with a log line saying why. An op in
    a worker builds its reply before the budget can see it, so there the
    pool's size bounds what is built at once (4 workers here)."""
    log = LogCapture()
    ops = big_ops(3_000_000, inline=inline)
    with serve(port=0, ops=ops, max_buffered_bytes=budget, error_log=log, workers=4) as server:
        memory = PeakMemory()
        socks = [non_reader(server.address) for _ in range(100)]
        try:
            for sock in socks:
                sock.sendall(b'{"op": "big"}\n')
            deadline = time.monotonic() + 3 * WAIT
            # Polling a real condition, bounded: every request read and every op
            # done (ops run in worker threads: a request read may still be running).
            while server.total_messages < 100 or server.stats()["ops_in_flight"]:
                assert time.monotonic() < deadline, f"{server.stats()} after 100 requests"
                time.sleep(0.01)
            assert server.buffered_bytes <= budget
            assert echo_time(server.address) < 0.5
        finally:
            for sock in socks:
                sock.close()
        grown = memory.stop()
    assert grown < 96 * MiB, f"memory grew by {grown / MiB:.0f} MiB"
    refused = [line for line in log.lines if "refused" in line]
    if budget == 32 * MiB and not refused:
        return
    assert refused, "no connection was refused"
    assert "input and replies held for all connections reached" in refused[0]
    assert "of unsent replies" in refused[0]


def test_a_result_too_deep_to_encode_gets_one_error_reply(serve: Serve) -> None:
    """Before: RecursionError while encoding dropped the connection with no
    reply, breaking the protocol's first rule (one reply per line)."""
    ops = default_ops.copy()

    @ops.op("deep")
    def deep(params, ctx):
        value: list = []
        for _ in range(5000):
            value = [value]
        return value

    @ops.op("wrap")
    def wrap(params, ctx):
        for _ in range(100):
            params = {"wrapped": params}
        return params

    # Params that parse (a few levels below the recursion limit), and a
    # result that cannot be encoded once the op has wrapped them.
    nested = "[" * 950 + "]" * 950
    log = LogCapture()
    with (
        serve(port=0, ops=ops, log=log) as server,
        connect(server.address) as sock,
    ):
        reader = LineReader(sock)
        sock.sendall(b'{"op": "deep", "id": 1}\n')
        sock.sendall(b'{"op": "wrap", "id": 2, "x": ' + nested.encode() + b"}\n")
        sock.sendall(b"still here\n")
        for request_id in (1, 2):
            reply = json.loads(reader.line())
            assert reply["id"] == request_id and reply["ok"] is False
            assert reply["error"]["code"] == "op_failed"
        assert reader.line() == b"still here"
    failures = [line for line in log.lines if line.startswith("Error:")]
    assert len(failures) == 2 and "RecursionError" in failures[0]


@pytest.mark.skipif(sys.platform == "win32", reason="stopped by a POSIX signal")
def test_a_redirected_log_keeps_every_line(tmp_path: Path) -> None:
    """``spike-server > file`` and 100,000 pipelined JSON echoes: the file holds
    every Received line. Before: 5,000-45,000 were dropped as 'not being read'."""
    count = 100_000
    request = b'{"op": "echo", "text": "A message from CS361"}\n'
    log_path = tmp_path / "log.txt"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spike.server", "--port", "0"],
            stdout=out,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=cli_env(),
        )
    try:
        address = None
        deadline = time.monotonic() + WAIT
        while address is None:
            assert time.monotonic() < deadline, "the server never said where it serves"
            time.sleep(0.01)
            first = log_path.read_text(encoding="utf-8").partition("\n")
            address = serving_port(first[0]) if first[1] else None
        with connect(address, timeout=60) as sock:
            writer = threading.Thread(target=sock.sendall, args=(request * count,), daemon=True)
            writer.start()
            reader = LineReader(sock)
            for _ in range(count):
                reader.line()
            writer.join(WAIT)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        proc.stderr.close()
    lines = log_path.read_text(encoding="utf-8").splitlines()
    received = sum(line.startswith("Received: ") for line in lines)
    assert not [line for line in lines if "dropped" in line]
    assert received == count
    assert lines[-1] == "Server stopped."


def test_stopping_sends_the_replies_already_made(serve: Serve) -> None:
    """25 clients pipeline more than the server will answer before it
    stops (6 MB each), and have read nothing. Then it stops, and they read: every reply
    the server made arrives, and no client is reset. Before: unsent replies
    were dropped, and closing with their unread input reset the clients."""
    line = b"r" * 9_999 + b"\n"
    with serve(port=0, flush_after=0) as server:
        socks = [non_reader(server.address) for _ in range(25)]
        for sock in socks:
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.send(line * 600)  # as much as the buffers take
        answered = settled(lambda: server.total_messages)
        stopper = threading.Thread(target=server.close)
        stopper.start()
        received = read_all(socks)
        stopper.join(WAIT)
    assert answered > 25
    assert received == answered


def read_all(socks: list[socket.socket]) -> int:
    """Read every socket to its end at once (as 100 client programs would);
    the number of lines received. A reset fails the test."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ, sock)
    lines = 0
    deadline = time.monotonic() + 3 * WAIT
    while selector.get_map():
        assert time.monotonic() < deadline, "the server never closed some connections"
        for key, _ in selector.select(0.1):
            data = key.data.recv(262144)
            lines += data.count(b"\n")
            if not data:
                selector.unregister(key.fileobj)
                key.data.close()
    return lines


def settled(value: Callable[[], int], quiet: float = 0.3) -> int:
    """``value()`` once it has stopped changing for ``quiet`` seconds (bounded)."""
    deadline = time.monotonic() + 3 * WAIT
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "never settled"
        time.sleep(0.02)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_every_line_before_an_over_long_one_is_answered(serve: Serve) -> None:
    """Three calls for replies above the output cap, then a line over the
    limit in the same burst: three replies, then the error, then the end."""
    with (
        serve(port=0, ops=big_ops(300_000), max_line_bytes=100) as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b'{"op": "big"}\n' * 3 + b"x" * 101 + b"\n")
        reader = LineReader(sock)
        for _ in range(3):
            assert json.loads(reader.line())["result"] == "x" * 300_000
        assert json.loads(reader.line())["error"]["code"] == "line_too_long"
        assert reader.closed_by_peer()


@pytest.mark.parametrize("inline", [True, False], ids=["loop", "worker"])
def test_a_reply_bigger_than_the_whole_budget_is_an_error_reply_not_a_cut_line(
    inline: bool, serve: Serve
) -> None:
    """A 2 MB reply with a 1 MiB budget, to a client that reads. Before: it was
    queued, refused at once and cut mid-line, with no error reply."""
    log = LogCapture()
    ops = big_ops(2_000_000, inline=inline)
    with (
        serve(port=0, ops=ops, max_buffered_bytes=MiB, error_log=log) as server,
        connect(server.address) as sock,
    ):
        reply = json.loads(round_trip(sock, b'{"op": "big", "id": 9}\n'))
        assert reply["id"] == 9 and reply["error"]["code"] == "op_failed"
        assert "more than the server holds for all its clients" in reply["error"]["message"]
        assert round_trip(sock, b"still open\n") == b"still open"
    (line,) = [line for line in log.lines if line.startswith("Error:")]
    assert "op 'big' returned a reply too big to hold (request id 9)" in line
