"""The plan of a benchmark run: how much work, which servers, which measurements.

A :class:`Case` is one test run against one subject (a server), once per
round. The cases are listed as a table (:data:`CASES`); what each kind of
measurement does is in :func:`measure`, and the raw observations of
``spike.bench.load`` become figures here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from typing import Any

from spike.bench import load
from spike.bench.procs import (
    BenchSetupError,
    ServerProcess,
    build_c_server,
    find_c_compiler,
    pinned,
    python_command,
)

BIG_REPEATS = 5
MESSAGE = "A message from CS361"  # the assignment's words, exactly
# The same message as a JSON echo request, for pipelined JSON.
JSON_REQUEST = json.dumps({"op": "echo", "text": MESSAGE}, separators=(",", ":"))
# Ops that wait (a database or web call's stand-in, spike.bench.wait_ops):
# 32 connections each send 15 requests in turn to a def op that sleeps 20 ms
# (as many connections as the pool has workers), and a crowd of clients each
# connects and sends one request to an op that waits 100 ms (async def on the
# pipe). Connecting is timed: a thread per connection costs most when it
# starts. The same crowd on connections opened beforehand is shown as well.
WAIT_DEF = (32, 15, 20)  # connections, requests each, ms
WAIT_ASYNC_MS = 100


@dataclasses.dataclass
class Sizes:
    """How much work each case does per round (``"settings"`` in the results file)."""

    rounds: int
    requests: int
    warmup: int
    pipeline: int
    connections: int
    conn_requests: int
    big_mib: float
    wait_connections: int


FULL = Sizes(
    rounds=9,
    requests=20_000,
    warmup=500,
    pipeline=200_000,
    connections=1000,
    conn_requests=20,
    big_mib=8,
    wait_connections=1000,
)
# The same tests with a tenth of the round trips and fewer rounds.
QUICK = dataclasses.replace(FULL, rounds=3, requests=2_000, warmup=200, pipeline=20_000)

Measure = Callable[[ServerProcess], dict[str, Any]]


@dataclasses.dataclass
class Subject:
    """A server under test: how to start it and how to describe it."""

    key: str
    label: str
    role: str  # "spike", "floor" or "reference"
    command: list[str]
    # Runs on every CPU, its client too, when the rest share one (see
    # procs.every_cpu): only in a pinned run.
    spread: bool = False


@dataclasses.dataclass
class Case:
    """One measurement: a test run against a subject, once per round."""

    test: str
    subject: str
    key: str  # unique within the test, names the row in the results
    label: str
    role: str
    run: Measure
    spread: bool = False  # its subject's (see Subject.spread)
    rounds: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failure: str = ""


TEST_TITLES = {
    "round_trip": "Round trip on one connection",
    "pipelined": "Pipelined messages on one connection",
    "connections": "Many connections at once",
    "big_message": "One big message",
    "waits": "Ops that wait",
}

# (test, subject, measurement, label, row id, role); an empty label, id or
# role is the subject's own. A case whose subject this run cannot start is left out.
# A label may name the sizes: {def_conns}, {def_requests}, {def_ms}, {async_conns}, {async_ms}.
CASES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("round_trip", "c_blocking", "text", "", "", ""),
    ("round_trip", "py_echo", "text", "", "", ""),
    ("round_trip", "spike", "text", "spike, plain text", "spike_text", ""),
    ("round_trip", "spike_quiet", "text", "spike --quiet, plain text", "spike_quiet_text", ""),
    # What one thread and an event loop cost by themselves (the pipe's design).
    ("round_trip", "py_selectors", "text", "", "", ""),
    ("round_trip", "spike", "json", "spike, JSON echo", "spike_json", ""),
    ("round_trip", "spike_quiet", "json", "spike --quiet, JSON echo", "spike_quiet_json", ""),
    ("round_trip", "spike", "client", "spike, JSON via spike.Client", "spike_client", ""),
    ("round_trip", "py_json", "json", "", "", ""),
    ("round_trip", "zmq", "zmq", "", "", ""),
    ("round_trip", "http", "http", "", "", ""),
    ("pipelined", "c_blocking", "pipelined", "", "", ""),
    ("pipelined", "py_echo", "pipelined", "", "", ""),
    ("pipelined", "py_lines", "pipelined", "", "", ""),
    ("pipelined", "py_lines_sendall", "pipelined", "", "", ""),
    ("pipelined", "spike", "pipelined", "spike, plain text", "", ""),
    ("pipelined", "spike_quiet", "pipelined", "spike --quiet, plain text", "", ""),
    ("pipelined", "py_json", "pipelined_json", "", "", ""),
    ("pipelined", "py_json_sendall", "pipelined_json", "", "", ""),
    ("pipelined", "spike", "pipelined_json", "spike, JSON echo", "spike_json", ""),
    (
        "pipelined",
        "spike_quiet",
        "pipelined_json",
        "spike --quiet, JSON echo",
        "spike_quiet_json",
        "",
    ),
    ("connections", "c_epoll", "connections", "", "", ""),
    ("connections", "py_selectors", "connections", "", "", ""),
    ("connections", "spike", "connections", "", "", ""),
    ("connections", "spike_quiet", "connections", "", "", ""),
    # Not a floor here: a thread per connection is the design the spike avoided.
    (
        "connections",
        "py_echo",
        "connections",
        "Python socket echo, a thread per connection",
        "",
        "reference",
    ),
    ("big_message", "c_blocking", "big", "", "", ""),
    ("big_message", "py_echo", "big", "", "", ""),
    ("big_message", "spike_big", "big", "", "", ""),
    (
        "waits",
        "spike_waits",
        "wait_def",
        "spike, def op: {def_conns} conns × {def_requests} × {def_ms} ms",
        "spike_def",
        "",
    ),
    ("waits", "py_waits", "wait_def", "ThreadingTCPServer: the same", "threads_def", ""),
    (
        "waits",
        "spike_waits",
        "wait_async",
        "spike, async def op: {async_conns} clients connect and call, {async_ms} ms",
        "spike_async",
        "",
    ),
    (
        "waits",
        "py_waits",
        "wait_async",
        "ThreadingTCPServer: the same, a thread per client",
        "threads_async",
        "",
    ),
    # The floor of that design: one thread, a selectors loop, a heap of
    # replies due; nothing else.
    (
        "waits",
        "py_waits_floor",
        "wait_async",
        "Python floor: one selectors thread, a heap of replies due",
        "floor_async",
        "",
    ),
    # The same pair on every CPU: on one shared core a thousand threads take
    # turns cheaply; on two they contend for Python's lock.
    (
        "waits",
        "spike_waits_spread",
        "wait_async",
        "spike, the same, client and servers on every CPU",
        "spike_async_spread",
        "",
    ),
    (
        "waits",
        "py_waits_spread",
        "wait_async",
        "ThreadingTCPServer: the same on every CPU",
        "threads_async_spread",
        "",
    ),
    # Extra rows: the same calls on connections opened before the clock
    # starts, so the reference's threads already exist and only sleep.
    (
        "waits",
        "spike_waits",
        "wait_async_held",
        "spike, the same on {async_conns} connections already open",
        "spike_async_held",
        "",
    ),
    (
        "waits",
        "py_waits",
        "wait_async_held",
        "ThreadingTCPServer: the same, already open",
        "threads_async_held",
        "",
    ),
)


# ---------------------------------------------------------------- statistics of one batch


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def round_trip_stats(timed: load.Timed) -> dict[str, Any]:
    """p50 and p99 in microseconds, and requests per second, of one timed batch."""
    ordered = sorted(timed.latencies_ns)
    return {
        "p50_us": percentile(ordered, 0.50) / 1e3,
        "p99_us": percentile(ordered, 0.99) / 1e3,
        "requests_per_s": len(ordered) / timed.elapsed_s,
    }


def connection_stats(timed: load.Timed, planned: int) -> dict[str, Any]:
    """Throughput, p50 and p99 in milliseconds, and errors of a many-connection batch."""
    ordered = sorted(timed.latencies_ns)
    return {
        "requests_per_s": len(ordered) / timed.elapsed_s if timed.elapsed_s > 0 else 0.0,
        "p50_ms": percentile(ordered, 0.50) / 1e6,
        "p99_ms": percentile(ordered, 0.99) / 1e6,
        "errors": timed.errors,
        "requests": planned,
    }


# ---------------------------------------------------------------- measurements


def measure(kind: str, s: Sizes) -> Measure:
    """The measurement ``kind`` (a name in :data:`CASES`) with the sizes of ``s``."""
    round_trips = {
        "text": load.text_round_trips,
        "json": load.json_round_trips,
        "client": load.client_round_trips,
        "http": load.http_round_trips,
        "zmq": load.zmq_round_trips,
    }
    if kind in round_trips:
        loop = round_trips[kind]
        return lambda srv: round_trip_stats(
            loop(srv.host, srv.port, MESSAGE, s.requests, s.warmup)
        )
    if kind in ("pipelined", "pipelined_json"):
        line = MESSAGE if kind == "pipelined" else JSON_REQUEST
        return lambda srv: {
            "messages_per_s": s.pipeline / load.pipelined(srv.host, srv.port, line, s.pipeline)
        }
    if kind == "connections":
        return lambda srv: connection_stats(
            load.many_connections(srv.host, srv.port, MESSAGE, s.connections, s.conn_requests),
            s.connections * s.conn_requests,
        )
    if kind in ("wait_def", "wait_async", "wait_async_held"):
        conns, each, ms = (
            WAIT_DEF if kind == "wait_def" else (s.wait_connections, 1, WAIT_ASYNC_MS)
        )
        op = "wait" if kind == "wait_def" else "wait_async"
        request = json.dumps({"op": op, "ms": ms}, separators=(",", ":"))
        reply = json.dumps({"ok": True, "result": {"waited_ms": ms}}, separators=(",", ":"))
        if kind == "wait_async":  # the clients arrive: connecting is timed
            return lambda srv: connection_stats(
                load.arrivals(srv.host, srv.port, request, conns, reply=reply), conns
            )
        return lambda srv: connection_stats(
            load.many_connections(srv.host, srv.port, request, conns, each, reply=reply),
            conns * each,
        )
    if kind == "big":
        big_bytes = int(s.big_mib * 2**20)

        def big(srv: ServerProcess) -> dict[str, Any]:
            # One echo takes only milliseconds, so one hiccup would decide a round:
            # each round takes the median of a few.
            seconds = [load.big_message(srv.host, srv.port, big_bytes) for _ in range(BIG_REPEATS)]
            return {"mib_per_s": (big_bytes / 2**20) / statistics.median(seconds)}

        return big
    raise ValueError(f"unknown measurement {kind!r}")


# ---------------------------------------------------------------- the plan


def subjects(sizes: Sizes, use_c: bool, notes: list[str]) -> dict[str, Subject]:
    """Every server this run can start, with a note for each one it cannot.

    The subjects that run on every CPU exist only in a pinned run (without
    pinning every row runs that way)."""
    big_limit = str(int(sizes.big_mib * 2**20) * 2)
    found = {
        "spike": Subject("spike", "spike", "spike", python_command("spike.server", "--port", "0")),
        "spike_quiet": Subject(
            "spike_quiet",
            "spike --quiet",
            "spike",
            python_command("spike.server", "--port", "0", "--quiet"),
        ),
        "spike_big": Subject(
            "spike_big",
            "spike (line limit raised)",
            "spike",
            python_command("spike.server", "--port", "0", "--max-line-bytes", big_limit),
        ),
        "spike_waits": Subject(
            "spike_waits",
            "spike --ops spike.bench.wait_ops:ops",
            "spike",
            python_command("spike.server", "--port", "0", "--ops", "spike.bench.wait_ops:ops"),
        ),
    }
    references = {
        "py_echo": ("Python socket echo (floor)", "floor", "echo"),
        "py_lines": ("naive lines server (Python)", "reference", "lines"),
        "py_json": ("naive JSON-lines (Python)", "reference", "jsonlines"),
        "py_lines_sendall": ("naive lines, a sendall per line", "reference", "lines-sendall"),
        "py_json_sendall": (
            "naive JSON-lines, a sendall per line",
            "reference",
            "jsonlines-sendall",
        ),
        "py_waits": ("ThreadingTCPServer JSON-lines", "reference", "waits"),
        "py_waits_floor": ("Python floor for ops that wait", "floor", "waits-floor"),
        "py_selectors": ("Python selectors echo, one thread (floor)", "floor", "selectors"),
        "http": ("HTTP/1.1 keep-alive (http.server)", "reference", "http"),
    }
    try:
        import zmq  # noqa: F401, PLC0415  (only checking that the optional extra is there)
    except ImportError:
        notes.append(
            "ZeroMQ skipped: pyzmq is not installed (pip install pyzmq, or the 'bench' extra)."
        )
    else:
        references["zmq"] = ("ZeroMQ REQ/REP (pyzmq)", "reference", "zmq")
    for key, (label, role, kind) in references.items():
        found[key] = Subject(key, label, role, python_command("spike.bench.servers", kind))
    if pinned():
        for key in ("spike_waits", "py_waits"):
            subject = found[key]
            found[f"{key}_spread"] = dataclasses.replace(
                subject, key=f"{key}_spread", label=f"{subject.label} (every CPU)", spread=True
            )
    found.update(c_subjects(use_c, notes))
    return found


def c_subjects(use_c: bool, notes: list[str]) -> dict[str, Subject]:
    """The C floors that build here, or none, with a note saying why."""
    compiler = find_c_compiler() if use_c else None
    if not use_c:
        notes.append("C floors skipped: --no-c.")
        return {}
    if sys.platform == "win32":
        notes.append(
            "C floors skipped: the C servers use POSIX sockets and do not build on Windows."
        )
        return {}
    if compiler is None:
        notes.append("C floors skipped: no C compiler (cc, gcc or clang) on PATH.")
        return {}
    sources = {"c_blocking": ("echo_blocking.c", "C blocking echo (floor)")}
    if sys.platform.startswith("linux"):
        sources["c_epoll"] = ("echo_epoll.c", "C epoll echo (floor)")
    else:
        notes.append("C epoll floor skipped: epoll exists only on Linux.")
    found: dict[str, Subject] = {}
    for key, (source, label) in sources.items():
        try:
            binary = build_c_server(source, compiler)
        except BenchSetupError as exc:
            notes.append(f"{label} skipped: {exc}")
            continue
        found[key] = Subject(key, label, "floor", [str(binary)])
    return found


def plan(sizes: Sizes, available: dict[str, Subject]) -> list[Case]:
    """The cases of :data:`CASES` whose subject is available, in that order."""
    cases: list[Case] = []
    names = {
        "def_conns": WAIT_DEF[0],
        "def_requests": WAIT_DEF[1],
        "def_ms": WAIT_DEF[2],
        "async_conns": f"{sizes.wait_connections:,}",
        "async_ms": WAIT_ASYNC_MS,
    }
    for test, subject_key, kind, label, key, role in CASES:
        subject = available.get(subject_key)
        if subject is None:
            continue
        cases.append(
            Case(
                test,
                subject_key,
                key or subject_key,
                label.format(**names) if label else subject.label,
                role or subject.role,
                measure(kind, sizes),
                subject.spread,
            )
        )
    return cases
