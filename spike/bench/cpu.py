"""``python -m spike.bench.cpu``: server CPU time per message, the pipe beside naive servers.

Wall-clock figures on a shared machine swing with whatever else runs; the
CPU time a server process spends (all its threads: the loop, the log's
writer, workers) barely does. For each workload this runs the same client
loop against the spike (default, logging; and ``--quiet``) and the naive
servers of :mod:`spike.bench.servers`, in interleaved rounds, and prints
the median CPU microseconds per message, split into user and system time.
Linux only: it reads ``/proc/PID/task/*/schedstat`` (nanoseconds on the
CPU) and ``stat`` (user and system ticks).

``--baseline DIR`` adds the spike of another checkout (``git worktree add
DIR COMMIT``) to every workload, for a change's cost in the same run.
"""

from __future__ import annotations

import os
import socket
import statistics
import sys
import time
from pathlib import Path

from spike._args import Parser, positive_int
from spike.bench import load
from spike.bench.plan import JSON_REQUEST, MESSAGE
from spike.bench.procs import BenchSetupError, ServerProcess, pin_to_cpu, python_command

_WARMUP = 200
# The log's writer thread writes every 50 ms: wait that long (and more) after
# the last reply, so its work for this batch is counted.
_SETTLE_S = 0.12
_TICK_S = 1 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01

# Workload: (line sent, pipelined?, the servers it is measured on).
WORKLOADS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "round-trip-json": (JSON_REQUEST, False, ("spike", "spike_quiet", "jsonlines")),
    "pipelined-json": (JSON_REQUEST, True, ("spike", "spike_quiet", "jsonlines")),
    "round-trip-text": (MESSAGE, False, ("spike", "spike_quiet", "echo", "lines")),
    "pipelined-text": (MESSAGE, True, ("spike", "spike_quiet", "lines")),
}
SERVERS = {
    "spike": ("spike", python_command("spike.server", "--port", "0")),
    "spike_quiet": ("spike --quiet", python_command("spike.server", "--port", "0", "--quiet")),
    "jsonlines": ("naive JSON-lines", python_command("spike.bench.servers", "jsonlines")),
    "lines": ("naive lines", python_command("spike.bench.servers", "lines")),
    "echo": ("Python socket echo", python_command("spike.bench.servers", "echo")),
}


def cpu_of(pid: int) -> tuple[int, int, int]:
    """CPU time of every thread of ``pid`` so far: (ns on the CPU, user ticks, system ticks)."""
    total = user = system = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError, ValueError):  # a thread that just ended
            continue
        user += int(fields[11])
        system += int(fields[12])
    return total, user, system


def _exchange(sock: socket.socket, line: bytes, count: int, pipelined: bool) -> int:
    """Sends ``count`` lines (pipelined: from a writer thread, in batches of
    256) and reads every reply; returns the number of messages."""
    if pipelined:
        chunks = [line * 256] * max(1, count // 256)
        writer = load._Writer(sock, chunks)
        writer.start()
        seen = 0
        while seen < len(chunks) * 256:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise load.LoadError("the server closed the connection")
            seen += chunk.count(b"\n")
        writer.finish(timeout=30)
        return seen
    for _ in range(count):
        sock.sendall(line)
        reply = sock.recv(1 << 16)
        while not reply.endswith(b"\n"):
            more = sock.recv(1 << 16)
            if not more:
                raise load.LoadError("the server closed the connection")
            reply += more
    return count


def measure(server: ServerProcess, line: bytes, count: int, pipelined: bool) -> tuple[float, ...]:
    """Server CPU per message in microseconds: (total, user, system).

    One connection, warmed up first; both looks at the server's threads are
    taken while it is open, since a thread-per-connection server's thread
    (and the time it spent) is gone once its connection closes.
    """
    with load.connect(server.host, server.port, timeout=30) as sock:
        _exchange(sock, line, _WARMUP, False)
        before = cpu_of(server.pid)
        # Pipelined messages cost a tenth as much: ten times as many keep
        # the user and system ticks (10 ms each) meaningful.
        messages = _exchange(sock, line, count * 10 if pipelined else count, pipelined)
        time.sleep(_SETTLE_S)
        after = cpu_of(server.pid)
    ns, user, system = (a - b for a, b in zip(after, before, strict=True))
    return ns / messages / 1e3, user * _TICK_S / messages * 1e6, system * _TICK_S / messages * 1e6


def _baseline_command(checkout: Path) -> list[str]:
    """``python -m spike.server --port 0`` with ``checkout``'s spike first on the path
    (``-m`` would put the current directory, maybe this checkout, before it)."""
    start = (
        f"import runpy, sys; sys.path.insert(0, {str(checkout.resolve())!r}); "
        "runpy.run_module('spike.server', run_name='__main__')"
    )
    return [sys.executable, "-c", start, "--port", "0"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m spike.bench.cpu``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = Parser(
        prog="python -m spike.bench.cpu",
        description="Server CPU time per message: the spike beside the naive servers (Linux).",
    )
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds")
    parser.add_argument(
        "--messages", type=positive_int, default=40_000, help="messages per case per round"
    )
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin to (default 0)")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        type=Path,
        help="also measure the spike of another checkout (its default, logging server)",
    )
    args = parser.parse_args(argv)
    workloads = WORKLOADS
    subjects = dict(SERVERS)
    if args.baseline is not None:
        if not (args.baseline / "spike" / "server").is_dir():
            parser.error(f"--baseline {args.baseline}: no spike/server there")
        subjects["baseline"] = (f"spike at {args.baseline}", _baseline_command(args.baseline))
        workloads = {
            name: (text, pipelined, (*keys[:1], "baseline", *keys[1:]))
            for name, (text, pipelined, keys) in WORKLOADS.items()
        }
    if not sys.platform.startswith("linux"):
        print("python -m spike.bench.cpu: reads /proc, so it runs on Linux only", file=sys.stderr)
        return 1
    try:
        pinning = pin_to_cpu(args.cpu)
        servers: dict[str, ServerProcess] = {}
        for key, (label, command) in subjects.items():
            servers[key] = ServerProcess(label, command, args.cpu).start()
    except BenchSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"server CPU per message, median of {args.rounds} rounds; {pinning}")
    try:
        for workload, (text, pipelined, keys) in workloads.items():
            line = text.encode() + b"\n"
            found: dict[str, list[tuple[float, ...]]] = {key: [] for key in keys}
            for number in range(args.rounds):
                order = keys[number % len(keys) :] + keys[: number % len(keys)]
                for key in order:
                    found[key].append(measure(servers[key], line, args.messages, pipelined))
            print(workload)
            for key, rounds in found.items():
                total, user, system = (statistics.median(r[i] for r in rounds) for i in range(3))
                spread = f"{min(r[0] for r in rounds):.2f}-{max(r[0] for r in rounds):.2f}"
                print(
                    f"  {servers[key].name:<20} {total:6.2f} us (user {user:.2f}, system "
                    f"{system:.2f}; rounds {spread})"
                )
    except (load.LoadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in servers.values():
            server.stop()
    print(f"Rerun this with: python -m spike.bench.cpu{''.join(' ' + a for a in argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
