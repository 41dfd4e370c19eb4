"""The log writer: batched, never blocking, honest about what it drops.

Real pipes, real threads; the only stand-in is a raw file object that counts
the write calls it passes on to a real pipe.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from helpers import ROOT, WAIT, LineReader, cli_env

from spike._logwriter import FAILED, STALLED, LogWriter, dropped_line


class Pipe:
    """An OS pipe: a text stream on the write end, the bytes read on demand."""

    def __init__(self, encoding: str = "utf-8") -> None:
        self.read_fd, write_fd = os.pipe()
        self.stream = open(write_fd, "w", encoding=encoding, errors="strict")  # noqa: SIM115
        self.received = bytearray()
        self._reader: threading.Thread | None = None

    def start_reading(self) -> None:
        def pump() -> None:
            while data := os.read(self.read_fd, 65536):
                self.received += data

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()

    def text(self) -> str:
        return self.received.decode()

    def close(self) -> None:
        self.stream.close()
        if self._reader is not None:
            self._reader.join(WAIT)
        os.close(self.read_fd)


class CountingRaw(io.RawIOBase):
    """A raw file that counts write calls and passes them to a real file descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.writes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.writes += 1
        return os.write(self.fd, data)


def wait_for(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # polling a real condition, bounded
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def test_lines_go_out_in_order_and_an_idle_line_at_once() -> None:
    pipe = Pipe()
    pipe.start_reading()
    writer = LogWriter(pipe.stream)
    started = time.monotonic()
    writer("first")
    wait_for(lambda: pipe.received.endswith(b"first" + os.linesep.encode()))
    assert time.monotonic() - started < 0.5
    for i in range(1000):
        writer(f"line {i}")
    assert writer.close()
    pipe.close()
    assert pipe.text().splitlines() == ["first", *(f"line {i}" for i in range(1000))]


def test_a_busy_log_is_written_in_few_large_writes() -> None:
    """Not one system call per line: at most one write per interval, plus
    one per 64 KiB when a lot waits."""
    read_fd, write_fd = os.pipe()
    raw = CountingRaw(write_fd)
    stream = io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8")
    received = bytearray()

    def pump() -> None:
        while data := os.read(read_fd, 65536):
            received.extend(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    writer = LogWriter(stream, interval=0.05)
    started = time.monotonic()
    lines = 20_000
    for i in range(lines):
        writer(f"Received: message number {i}")
        if i % 1000 == 0:
            time.sleep(0.01)  # a server's pace: bursts between waits
    assert writer.close()
    elapsed = time.monotonic() - started
    os.close(write_fd)
    reader.join(WAIT)
    os.close(read_fd)
    assert len(received.splitlines()) == lines
    # Each pass of the writer: one write per 64 KiB chunk; a pass starts when
    # the interval is up, or early when 64 KiB wait.
    chunks = len(received) // 65536 + 1
    assert raw.writes <= elapsed / 0.05 + 2 * chunks + 2, (raw.writes, elapsed)
    assert raw.writes < lines / 100


def test_an_output_nobody_reads_never_blocks_and_the_loss_is_reported_in_place() -> None:
    pipe = Pipe()
    writer = LogWriter(pipe.stream, max_pending=10_000)
    started = time.monotonic()
    total = 5000
    for i in range(total):
        writer(f"line {i:05d} " + "x" * 40)
    # 250 KB logged into a 64 KiB pipe and a 10,000-character queue: instant.
    assert time.monotonic() - started < 1.0
    assert writer.dropped > 0
    pipe.start_reading()  # someone reads again: the writer catches up
    wait_for(lambda: not writer._queue)
    writer("after")  # the first line with room again: the loss is reported before it
    assert writer.close()
    pipe.close()
    lines = pipe.text().splitlines()
    assert lines[-1] == "after"
    # Every loss is reported where it happened, with its exact size.
    expected = 0
    reports = 0
    for line in lines[:-1]:
        if line.endswith(" log lines dropped: the log output took nothing for a while"):
            assert line == dropped_line(int(line.split()[0]))
            expected += int(line.split()[0])
            reports += 1
        else:
            assert int(line.split()[1]) == expected, line
            expected += 1
    assert expected == total
    assert reports >= 1


def test_close_gives_up_on_a_stalled_output_and_counts_what_was_lost() -> None:
    pipe = Pipe()
    writer = LogWriter(pipe.stream)
    for i in range(5000):
        writer(f"line {i} " + "y" * 40)
    started = time.monotonic()
    assert not writer.close(stall=0.3)
    assert time.monotonic() - started < 1.5
    assert 0 < writer.dropped < 5000
    assert writer.drop_reason == STALLED
    os.close(pipe.read_fd)  # the writer thread's blocked write fails; it stops
    writer._thread.join(WAIT)
    pipe.stream.close()


def test_a_closed_output_is_not_an_error() -> None:
    pipe = Pipe()
    os.close(pipe.read_fd)  # nobody will ever read: writes fail with EPIPE
    writer = LogWriter(pipe.stream)
    for i in range(100):
        writer(f"line {i}")
    wait_for(lambda: writer._broken)
    writer("after the failure")
    assert not writer.close()
    assert writer.dropped == 101
    assert writer.drop_reason == FAILED
    pipe.stream.close()


def test_characters_the_output_cannot_encode_are_escaped() -> None:
    pipe = Pipe(encoding="ascii")
    pipe.start_reading()
    writer = LogWriter(pipe.stream)
    writer("café ✓")
    assert writer.close()
    pipe.stream.close()
    wait_for(lambda: pipe.received.endswith(os.linesep.encode()))
    os.close(pipe.read_fd)
    assert pipe.received.decode("ascii").splitlines() == ["caf\\xe9 \\u2713"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_loses_no_log_line() -> None:
    """A busy server stopped at once: every line it logged still comes out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "spike.server", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        port = int(first.split(" (")[0].rsplit(":", 1)[1])
        count = 3000
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            reader = LineReader(sock)
            sock.sendall(b"".join(b"message %d\n" % i for i in range(count)))
            for i in range(count):
                assert reader.line() == b"message %d" % i
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
    lines = out.decode().splitlines()
    received = [line for line in lines if line.startswith("Received: ")]
    assert received == [f"Received: message {i}" for i in range(count)]
    assert lines[-1] == "Server stopped."
    assert proc.returncode == 0 and not err


def test_a_batch_of_raw_lines_reads_as_one_line_each() -> None:
    """lines() formats a whole burst on the writer thread; what comes out is
    exactly what one call per line would have written."""
    from spike._logwriter import display_line

    batch = [
        b"plain",
        b"",
        b"x" * 300,
        b"ring\x07 and \x1b[31mred",
        "café \u2028 forged?".encode(),
        b"\xff\xfe not UTF-8",
        b"a\rb",
    ]
    pipe = Pipe()
    pipe.start_reading()
    writer = LogWriter(pipe.stream)
    writer.lines("Received: ", batch[:2])  # the quick path: short printable ASCII
    writer.lines("Received: ", batch)
    for line in batch:  # one at a time, merged into one batch on the writer thread
        writer.line("Received: ", line)
    # A raw line holding a line break of its own cannot pass for two lines.
    writer.line("Received: ", b"a\nError: forged")
    writer("done")
    assert writer.close()
    pipe.close()
    expected = [f"Received: {display_line(line)}" for line in [*batch[:2], *batch, *batch]]
    assert pipe.text().splitlines() == [*expected, "Received: a\\x0aError: forged", "done"]


def test_a_huge_line_is_shown_short_and_costs_no_queue_room() -> None:
    pipe = Pipe()
    pipe.start_reading()
    writer = LogWriter(pipe.stream, max_pending=1000)
    writer.line("Received: ", b"z" * 100_000)  # far more than the queue may hold
    assert writer.close()
    pipe.close()
    assert writer.dropped == 0
    assert pipe.text().splitlines() == ["Received: " + "z" * 200 + "... (100000 characters)"]


@pytest.mark.parametrize("batched", [False, True], ids=["a line at a time", "batches"])
def test_the_bound_on_what_waits_bounds_memory_for_the_shortest_lines(batched: bool) -> None:
    """A stalled output and a flood of 2-byte messages: what waits in memory
    stays near max_pending. Counted as characters alone, each queued line's
    objects cost eight times its text (a server's log reached 172 MiB under
    a 32 Mi-character bound)."""
    import tracemalloc

    pipe = Pipe()  # never read: the writer stalls once the OS pipe is full
    bound = 1 << 20
    writer = LogWriter(pipe.stream, max_pending=bound, stall=0.1)
    batch = [b"ab" + bytes([65 + i % 26]) for i in range(256)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(400):  # 102,400 messages: 1.3 MB of text with their prefix
            if batched:
                writer.lines("Received: ", [bytes(line) for line in batch])
            else:
                for line in batch:
                    writer.line("Received: ", bytes(line))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert writer.dropped > 0  # the bound was reached
    assert held < 2 * bound, f"{held / bound:.1f} times the bound held in memory"
    writer.close(stall=0.1)
    pipe.close()
