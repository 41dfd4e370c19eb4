"""A stalled server never acts on stale knowledge (issue: exactly one reply per line).

A laptop under load, a VM's stolen time, a resume from sleep or a GC pause
can keep the server from running for a while. These tests stop a real
``spike-server`` process (SIGSTOP, then SIGCONT) at the worst moment, so
they mean the same whether ops run on the loop or off it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import WAIT, LineReader, ServerProcess, connect

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="stops the server process with SIGSTOP/SIGCONT (POSIX only)"
)


@contextmanager
def stopped(proc: ServerProcess, seconds: float) -> Iterator[None]:
    """The server process is not scheduled inside the block, and for at least ``seconds``."""
    os.kill(proc.proc.pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        yield
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        os.kill(proc.proc.pid, signal.SIGCONT)


def test_a_line_sent_in_pieces_across_a_stall_gets_one_reply(server_process) -> None:
    """``hello `` then, 30 ms later, ``world\\n``, while the server is stopped
    for 0.5 s (past the 0.25 s flush-after): before, it answered ``hello ``
    and ``world`` as two messages, 3 runs of 3."""
    proc = server_process("--port", "0", "--quiet")
    for _ in range(3):
        with connect(("127.0.0.1", proc.port)) as sock:
            sock.sendall(b"hello ")
            time.sleep(0.05)  # read by the server: its flush deadline is now set
            with stopped(proc, 0.5):
                time.sleep(0.03)
                sock.sendall(b"world\n")
            reader = LineReader(sock)
            assert reader.line() == b"hello world"
            sock.sendall(b"next\n")
            assert reader.line() == b"next"  # no stray second reply came first


def test_a_json_request_sent_in_pieces_across_a_stall_is_one_request(server_process) -> None:
    proc = server_process("--port", "0", "--quiet")
    with connect(("127.0.0.1", proc.port)) as sock:
        sock.sendall(b'{"op": "echo", ')
        time.sleep(0.05)
        with stopped(proc, 0.5):
            sock.sendall(b'"id": 1, "text": "hi"}\n')
        assert LineReader(sock).line() == b'{"id":1,"ok":true,"result":{"text":"hi"}}'


def test_a_client_that_spoke_during_a_stall_is_not_idle(server_process) -> None:
    """--idle-timeout 1: the client sends 0.1 s before its deadline while the
    server is stopped. Before: reset with its request unread, logged as idle."""
    proc = server_process("--port", "0", "--idle-timeout", "1")
    with connect(("127.0.0.1", proc.port), timeout=WAIT) as sock:
        opened = time.monotonic()
        time.sleep(0.8)
        with stopped(proc, 0.7):
            time.sleep(max(0.0, 0.9 - (time.monotonic() - opened)))
            sock.sendall(b"still here\n")
        reader = LineReader(sock)
        assert reader.line() == b"still here"
        sock.sendall(b"and again\n")
        assert reader.line() == b"and again"
