"""How fast is the pipe? A benchmark against the machine's floor and the alternatives.

Run ``python -m spike.bench`` (add ``--quick`` for a short run and
``--json FILE`` to save the results). Every server runs in its own process;
the client loops run here. Measurements are taken in interleaved rounds (each
round visits every case once, in a rotated order) and the figures reported
are medians over the rounds, so a slow moment of the machine hits all cases
alike instead of one. On Linux the benchmark and its servers are pinned to
one CPU: on a 2-core VM a round trip that crosses cores costs tens of
microseconds more, and whether it crosses changes from run to run.

What it measures:

* round trips on one connection (p50, p99, requests/s): the spike with plain
  text and with JSON, a C blocking echo server (the machine's floor), a plain
  Python socket echo server (the Python floor), a naive JSON-lines server,
  ZeroMQ REQ/REP (when pyzmq is installed) and HTTP/1.1 keep-alive
  (``http.server`` + ``http.client``);
* pipelined messages/s on one connection (a writer thread and a reader),
  against the floors and a naive Python lines server;
* 1,000 connections x 20 round trips at once (requests/s, p99, errors)
  against the spike and a C epoll server;
* one 8 MiB message echoed (MiB/s), the spike with a raised line limit.

The spike runs as users run it: ``spike-server`` with its default log, a
line per connection and per message, written to a pipe that this process
reads. A second spike server started with ``--quiet`` runs beside it in the
round-trip, pipelined and many-connection tests, so the cost of the log is
measured too.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import math
import os
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spike import _bench_load as load
from spike._bench_procs import (
    BenchSetupError,
    ServerProcess,
    build_c_server,
    find_c_compiler,
    pin_to_cpu,
    python_command,
)
from spike._bench_report import format_table, load_average, machine_info
from spike._limits import raise_open_file_limit
from spike.cli import positive_int

SCHEMA = 1
BIG_REPEATS = 5
MESSAGE = "A message from CS361!"

# Targets (issue 13), evaluated for the default, logging server and printed,
# never asserted. Each compares the spike with what Python itself reaches in
# the same run: set against the C floor instead, they would pass or fail
# with how fast the machine's kernel path is, not with the spike.
TARGET_TEXT_VS_PY = 1.25  # plain-text round trip p50 / Python socket echo p50
TARGET_JSON_VS_NAIVE = 1.0  # JSON echo p50 / naive JSON-lines server p50
TARGET_CONNS_VS_EPOLL = 0.6  # 1,000 connections req/s / C epoll req/s
TARGET_CONNS_P99_MS = 50.0
TARGET_PIPELINED_VS_LINES = 0.7  # messages/s / naive Python lines server
# What the log may cost: the default server against the same one --quiet.
TARGET_LOG_ROUND_TRIP = 1.15  # p50 ratio, at most
TARGET_LOG_THROUGHPUT = 0.8  # pipelined and 1,000-connection rates, at least


@dataclasses.dataclass
class Settings:
    """How much work each case does per round."""

    rounds: int
    requests: int
    warmup: int
    pipeline: int
    connections: int
    conn_requests: int
    big_mib: float


FULL = Settings(
    rounds=9,
    requests=20_000,
    warmup=500,
    pipeline=200_000,
    connections=1000,
    conn_requests=20,
    big_mib=8,
)
QUICK = Settings(
    rounds=3,
    requests=2_000,
    warmup=200,
    pipeline=20_000,
    connections=1000,
    conn_requests=20,
    big_mib=8,
)


@dataclasses.dataclass
class Subject:
    """A server under test: how to start it and how to describe it."""

    key: str
    label: str
    role: str  # "spike", "floor" or "reference"
    command: list[str]


@dataclasses.dataclass
class Case:
    """One measurement: a test run against a subject, once per round."""

    test: str
    subject: str
    key: str  # unique within the test, names the row in the results
    label: str
    role: str
    run: Callable[[ServerProcess], dict[str, Any]]
    rounds: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failure: str = ""


TEST_TITLES = {
    "round_trip": "Round trip on one connection",
    "pipelined": "Pipelined messages on one connection",
    "connections": "Many connections at once",
    "big_message": "One big message",
}


# ---------------------------------------------------------------- statistics


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an already sorted list."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _round_trip_stats(timed: load.Timed) -> dict[str, Any]:
    ordered = sorted(timed.latencies_ns)
    return {
        "p50_us": percentile(ordered, 0.50) / 1e3,
        "p99_us": percentile(ordered, 0.99) / 1e3,
        "requests_per_s": len(ordered) / timed.elapsed_s,
    }


def _median_of_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        # Errors add up: one error in any round is an error of the run.
        merged[key] = sum(values) if key in ("errors", "requests") else statistics.median(values)
    return merged


# ---------------------------------------------------------------- the plan


def _subjects(settings: Settings, use_c: bool, notes: list[str]) -> dict[str, Subject]:
    """Every server this run can start, with a note for each one it cannot."""
    big_limit = str(int(settings.big_mib * 2**20) * 2)
    subjects = {
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
        "py_echo": Subject(
            "py_echo",
            "Python socket echo (floor)",
            "floor",
            python_command("spike._bench_servers", "echo"),
        ),
        "py_lines": Subject(
            "py_lines",
            "naive lines server (Python)",
            "reference",
            python_command("spike._bench_servers", "lines"),
        ),
        "py_json": Subject(
            "py_json",
            "naive JSON-lines (Python)",
            "reference",
            python_command("spike._bench_servers", "jsonlines"),
        ),
        "http": Subject(
            "http",
            "HTTP/1.1 keep-alive (http.server)",
            "reference",
            python_command("spike._bench_servers", "http"),
        ),
    }
    try:
        import zmq  # noqa: F401, PLC0415  (only checking that the optional extra is there)
    except ImportError:
        notes.append(
            "ZeroMQ skipped: pyzmq is not installed (pip install pyzmq, or the 'bench' extra)."
        )
    else:
        subjects["zmq"] = Subject(
            "zmq",
            "ZeroMQ REQ/REP (pyzmq)",
            "reference",
            python_command("spike._bench_servers", "zmq"),
        )

    compiler = find_c_compiler() if use_c else None
    if not use_c:
        notes.append("C floors skipped: --no-c.")
    elif sys.platform == "win32":
        notes.append(
            "C floors skipped: the C servers use POSIX sockets and do not build on Windows."
        )
    elif compiler is None:
        notes.append("C floors skipped: no C compiler (cc, gcc or clang) on PATH.")
    else:
        sources = {"c_blocking": ("echo_blocking.c", "C blocking echo (floor)")}
        if sys.platform.startswith("linux"):
            sources["c_epoll"] = ("echo_epoll.c", "C epoll echo (floor)")
        else:
            notes.append("C epoll floor skipped: epoll exists only on Linux.")
        for key, (source, label) in sources.items():
            try:
                binary = build_c_server(source, compiler)
            except BenchSetupError as exc:
                notes.append(f"{label} skipped: {exc}")
                continue
            subjects[key] = Subject(key, label, "floor", [str(binary)])
    return subjects


def _plan(settings: Settings, subjects: dict[str, Subject]) -> list[Case]:
    s = settings
    big_bytes = int(s.big_mib * 2**20)
    cases: list[Case] = []

    def add(
        test: str,
        subject_key: str,
        run: Callable[[ServerProcess], dict[str, Any]],
        label: str = "",
        key: str = "",
        role: str = "",
    ) -> None:
        if subject_key in subjects:
            subject = subjects[subject_key]
            cases.append(
                Case(
                    test,
                    subject_key,
                    key or subject_key,
                    label or subject.label,
                    role or subject.role,
                    run,
                )
            )

    def text_rt(srv: ServerProcess) -> dict[str, Any]:
        return _round_trip_stats(
            load.text_round_trips(srv.host, srv.port, MESSAGE, s.requests, s.warmup)
        )

    def json_rt(srv: ServerProcess) -> dict[str, Any]:
        return _round_trip_stats(
            load.json_round_trips(srv.host, srv.port, MESSAGE, s.requests, s.warmup)
        )

    def client_rt(srv: ServerProcess) -> dict[str, Any]:
        return _round_trip_stats(
            load.client_round_trips(srv.host, srv.port, MESSAGE, s.requests, s.warmup)
        )

    def http_rt(srv: ServerProcess) -> dict[str, Any]:
        return _round_trip_stats(
            load.http_round_trips(srv.host, srv.port, MESSAGE, s.requests, s.warmup)
        )

    def zmq_rt(srv: ServerProcess) -> dict[str, Any]:
        return _round_trip_stats(
            load.zmq_round_trips(srv.host, srv.port, MESSAGE, s.requests, s.warmup)
        )

    def piped(srv: ServerProcess) -> dict[str, Any]:
        return {
            "messages_per_s": s.pipeline / load.pipelined(srv.host, srv.port, MESSAGE, s.pipeline)
        }

    def many(srv: ServerProcess) -> dict[str, Any]:
        timed = load.many_connections(srv.host, srv.port, MESSAGE, s.connections, s.conn_requests)
        ordered = sorted(timed.latencies_ns)
        return {
            "requests_per_s": len(ordered) / timed.elapsed_s if timed.elapsed_s > 0 else 0.0,
            "p50_ms": percentile(ordered, 0.50) / 1e6,
            "p99_ms": percentile(ordered, 0.99) / 1e6,
            "errors": timed.errors,
            "requests": s.connections * s.conn_requests,
        }

    def big(srv: ServerProcess) -> dict[str, Any]:
        # One echo takes only milliseconds, so one hiccup would decide a round:
        # each round takes the median of a few.
        seconds = [load.big_message(srv.host, srv.port, big_bytes) for _ in range(BIG_REPEATS)]
        return {"mib_per_s": (big_bytes / 2**20) / statistics.median(seconds)}

    add("round_trip", "c_blocking", text_rt)
    add("round_trip", "py_echo", text_rt)
    add("round_trip", "spike", text_rt, "spike, plain text", "spike_text")
    add("round_trip", "spike_quiet", text_rt, "spike --quiet, plain text", "spike_quiet_text")
    add("round_trip", "spike", json_rt, "spike, JSON echo", "spike_json")
    add("round_trip", "spike_quiet", json_rt, "spike --quiet, JSON echo", "spike_quiet_json")
    add("round_trip", "spike", client_rt, "spike, JSON via spike.Client", "spike_client")
    add("round_trip", "py_json", json_rt)
    add("round_trip", "zmq", zmq_rt)
    add("round_trip", "http", http_rt)
    add("pipelined", "c_blocking", piped)
    add("pipelined", "py_echo", piped)
    add("pipelined", "py_lines", piped)
    add("pipelined", "spike", piped, "spike, plain text")
    add("pipelined", "spike_quiet", piped, "spike --quiet, plain text")
    add("connections", "c_epoll", many)
    add("connections", "spike", many)
    add("connections", "spike_quiet", many)
    # Not a floor here: a thread per connection is the design the spike avoided.
    add(
        "connections",
        "py_echo",
        many,
        "Python socket echo, a thread per connection",
        role="reference",
    )
    add("big_message", "c_blocking", big)
    add("big_message", "py_echo", big)
    add("big_message", "spike_big", big)
    return cases


# ---------------------------------------------------------------- running


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _describe(test: str, stats: dict[str, Any]) -> str:
    if test == "round_trip":
        return f"p50 {stats['p50_us']:8.1f} us  p99 {stats['p99_us']:8.1f} us"
    if test == "pipelined":
        return f"{stats['messages_per_s']:12,.0f} msg/s"
    if test == "connections":
        return (
            f"{stats['requests_per_s']:10,.0f} req/s  p99 {stats['p99_ms']:.1f} ms  errors "
            f"{stats['errors']}"
        )
    return f"{stats['mib_per_s']:8.1f} MiB/s"


def _run_rounds(
    cases: list[Case], servers: dict[str, ServerProcess], rounds: int, notes: list[str]
) -> None:
    """Runs every case once per round; a case that fails is noted and skipped from then on."""
    for number in range(rounds):
        # Rotate the order each round so no case always runs first or last.
        shift = number % len(cases)
        for case in cases[shift:] + cases[:shift]:
            if case.failure:
                continue
            server = servers.get(case.subject)
            if server is None:
                continue
            try:
                stats = case.run(server)
            except (load.LoadError, OSError) as exc:
                state = (
                    ""
                    if server.alive()
                    else f" (server exited: {server.last_output() or 'no output'})"
                )
                case.failure = f"{type(exc).__name__}: {exc}{state}"
                notes.append(f"{case.label} failed in round {number + 1}: {case.failure}")
                _progress(
                    f"  round {number + 1}/{rounds}  {case.label:<36} FAILED: {case.failure}"
                )
                continue
            case.rounds.append(stats)
            _progress(
                f"  round {number + 1}/{rounds}  {case.label:<36} {_describe(case.test, stats)}"
            )


def _paired_ratio(case: Case, base: Case | None, key: str) -> float | None:
    """Median over rounds of this case's figure divided by the base's figure in the same round.

    Both were measured within seconds of each other in every round, so a slow
    spell of the machine (another program waking up) inflates both and mostly
    cancels out, which a ratio of the two overall medians would not do.
    """
    if base is None or base.failure or case.failure or not case.rounds:
        return None
    pairs = [
        (mine[key], theirs[key])
        for mine, theirs in zip(case.rounds, base.rounds, strict=False)
        if theirs.get(key) and not math.isnan(theirs[key]) and not math.isnan(mine[key])
    ]
    if len(pairs) != len(case.rounds):
        return None
    return float(statistics.median(mine / theirs for mine, theirs in pairs))


def _results(cases: list[Case]) -> dict[str, Any]:
    tests: dict[str, dict[str, Any]] = {}
    for case in cases:
        table = tests.setdefault(case.test, {"title": TEST_TITLES[case.test], "rows": []})
        row: dict[str, Any] = {
            "id": case.key,
            "subject": case.subject,
            "label": case.label,
            "role": case.role,
        }
        if case.rounds:
            row.update(_median_of_rounds(case.rounds))
            row["rounds"] = len(case.rounds)
        if case.failure:
            row["failure"] = case.failure
        table["rows"].append((case, row))

    def base(test: str, key: str) -> Case | None:
        return next((c for c, _ in tests.get(test, {}).get("rows", []) if c.key == key), None)

    # Ratios: a time divided by the floor's time (above 1 = slower), a rate
    # divided by the floor's rate (below 1 = slower).
    metric = {"round_trip": "p50_us", "pipelined": "messages_per_s", "big_message": "mib_per_s"}
    for test, key in metric.items():
        c_floor, py_floor = base(test, "c_blocking"), base(test, "py_echo")
        for case, row in tests.get(test, {}).get("rows", []):
            if key in row:
                row["vs_c_floor"] = _paired_ratio(case, c_floor, key)
                row["vs_python_floor"] = _paired_ratio(case, py_floor, key)
    epoll = base("connections", "c_epoll")
    for case, row in tests.get("connections", {}).get("rows", []):
        if "requests_per_s" in row:
            row["vs_c_epoll"] = _paired_ratio(case, epoll, "requests_per_s")
    # Against the naive Python servers, and the default (logging) spike
    # against the same server --quiet: (test, field, base row, rows compared).
    comparisons = [
        ("round_trip", "vs_naive_json", "py_json", ("spike_json", "spike_quiet_json")),
        ("round_trip", "vs_quiet", "spike_quiet_text", ("spike_text",)),
        ("round_trip", "vs_quiet", "spike_quiet_json", ("spike_json",)),
        ("pipelined", "vs_naive_lines", "py_lines", ("spike", "spike_quiet")),
        ("pipelined", "vs_quiet", "spike_quiet", ("spike",)),
        ("connections", "vs_quiet", "spike_quiet", ("spike",)),
    ]
    metric["connections"] = "requests_per_s"
    for test, field, base_key, keys in comparisons:
        for case, row in tests.get(test, {}).get("rows", []):
            if case.key in keys and metric[test] in row:
                row[field] = _paired_ratio(case, base(test, base_key), metric[test])
    for table in tests.values():
        table["rows"] = [row for _, row in table["rows"]]
    return tests


def _targets(tests: dict[str, Any], connections: int) -> list[dict[str, Any]]:
    """The spike's targets, for the default (logging) server, each met, missed or not measured."""

    def row(test: str, key: str) -> dict[str, Any] | None:
        found = next((r for r in tests.get(test, {}).get("rows", []) if r["id"] == key), None)
        return None if found is None or "failure" in found else found

    targets: list[dict[str, Any]] = []

    def target(
        name: str,
        measure: str,
        found: dict[str, Any] | None,
        field: str,
        compare: str,
        limit: float,
    ) -> None:
        value = None if found is None else found.get(field)
        if value is None:
            targets.append(
                {"name": name, "measure": measure, "met": None, "detail": "not measured"}
            )
            return
        met = value <= limit if compare == "<=" else value >= limit
        targets.append(
            {
                "name": name,
                "measure": measure,
                "value": value,
                "limit": limit,
                "compare": compare,
                "met": met,
            }
        )

    text = row("round_trip", "spike_text")
    as_json = row("round_trip", "spike_json")
    conns = row("connections", "spike")
    piped = row("pipelined", "spike")
    many = f"{connections:,} connections"
    target(
        "plain-text round trip",
        "p50 ÷ Python floor",
        text,
        "vs_python_floor",
        "<=",
        TARGET_TEXT_VS_PY,
    )
    target(
        "JSON echo round trip",
        "p50 ÷ naive JSON-lines",
        as_json,
        "vs_naive_json",
        "<=",
        TARGET_JSON_VS_NAIVE,
    )
    target(
        f"{many}: throughput",
        "req/s ÷ C epoll",
        conns,
        "vs_c_epoll",
        ">=",
        TARGET_CONNS_VS_EPOLL,
    )
    target(f"{many}: p99", "p99 ms", conns, "p99_ms", "<=", TARGET_CONNS_P99_MS)
    target(f"{many}: errors", "failed requests", conns, "errors", "<=", 0)
    target(
        "pipelined plain text",
        "msg/s ÷ naive lines",
        piped,
        "vs_naive_lines",
        ">=",
        TARGET_PIPELINED_VS_LINES,
    )
    target(
        "cost of the log: round trip",
        "p50 ÷ --quiet",
        text,
        "vs_quiet",
        "<=",
        TARGET_LOG_ROUND_TRIP,
    )
    target(
        "cost of the log: pipelined",
        "msg/s ÷ --quiet",
        piped,
        "vs_quiet",
        ">=",
        TARGET_LOG_THROUGHPUT,
    )
    target(
        f"cost of the log: {many}",
        "req/s ÷ --quiet",
        conns,
        "vs_quiet",
        ">=",
        TARGET_LOG_THROUGHPUT,
    )
    return targets


def _command_line(argv: list[str]) -> str:
    return "python -m spike.bench" + "".join(" " + shlex.quote(a) for a in argv)


def _rounded(value: Any) -> Any:
    # Six significant digits are more than the noise allows; fewer digits keep the file readable.
    if isinstance(value, float):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def _write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(_rounded(results), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)


# ---------------------------------------------------------------- CLI


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m spike.bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m spike.bench",
        description=(
            "Measure the spike against a C floor, a Python floor, HTTP and ZeroMQ on this machine."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also save the results to FILE as JSON"
    )
    parser.add_argument(
        "--cpu", type=int, default=0, help="CPU to pin client and servers to on Linux (default 0)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to a CPU")
    parser.add_argument(
        "--no-c", action="store_true", help="skip the C floors even when a compiler exists"
    )
    sizes = parser.add_argument_group("sizes (override the --quick or full defaults)")
    sizes.add_argument(
        "--rounds", type=positive_int, help="interleaved rounds; figures are medians over them"
    )
    sizes.add_argument("--requests", type=positive_int, help="round trips per case per round")
    sizes.add_argument(
        "--warmup", type=_non_negative_int, help="untimed round trips before each timed batch"
    )
    sizes.add_argument("--pipeline", type=positive_int, help="messages per pipelined batch")
    sizes.add_argument("--connections", type=positive_int, help="concurrent connections")
    sizes.add_argument(
        "--conn-requests", type=positive_int, help="round trips per concurrent connection"
    )
    sizes.add_argument("--big-mib", type=_positive_float, help="size of the big message in MiB")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    base = dataclasses.replace(QUICK if args.quick else FULL)
    for field in dataclasses.fields(Settings):
        value = getattr(args, field.name, None)
        if value is not None:
            setattr(base, field.name, value)
    return base


def run(
    settings: Settings, *, cpu: int | None, use_c: bool, mode: str, command: str
) -> dict[str, Any]:
    """Runs the whole benchmark and returns the results as a JSON-ready dict."""
    notes: list[str] = []
    load_before = load_average()
    pinning = pin_to_cpu(cpu)
    cap = load.max_select_sockets()
    if cap is not None and settings.connections > cap:
        notes.append(
            f"connections lowered from {settings.connections} to {cap}: select() on this OS "
            "watches at most 512 sockets."
        )
        settings.connections = cap
    limit_note = raise_open_file_limit(settings.connections + 256)
    if limit_note:
        notes.append(limit_note)
    plural = "s" if settings.rounds != 1 else ""
    _progress(f"spike.bench: {mode} run, {settings.rounds} round{plural}; {pinning}")
    subjects = _subjects(settings, use_c, notes)
    cases = _plan(settings, subjects)
    servers: dict[str, ServerProcess] = {}
    try:
        for key in dict.fromkeys(case.subject for case in cases):
            subject = subjects[key]
            try:
                servers[key] = ServerProcess(subject.label, subject.command, cpu).start()
                _progress(f"  started {subject.label} on {servers[key].host}:{servers[key].port}")
            except BenchSetupError as exc:
                notes.append(f"skipped: {exc}")
                _progress(f"  skipped: {exc}")
        _run_rounds(cases, servers, settings.rounds, notes)
    finally:
        for server in servers.values():
            server.stop()
    for key, server in servers.items():
        if server.dropped_log_lines:
            notes.append(
                f"{subjects[key].label} dropped log lines (its log output could not keep up), "
                "so its figures include less logging than it was asked to do."
            )
    for case in cases:
        if case.subject not in servers and not case.failure:
            case.failure = "server did not start"
    tests = _results(cases)
    return {
        "schema": SCHEMA,
        "date": _dt.datetime.now(_dt.timezone.utc)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z"),
        "mode": mode,
        "command": command,
        "message": MESSAGE,
        "machine": machine_info(pinning, load_before),
        "settings": dataclasses.asdict(settings),
        "notes": notes,
        "tests": tests,
        "targets": _targets(tests, settings.connections),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m spike.bench``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    settings = _settings(args)
    mode = "quick" if args.quick else "full"
    try:
        results = run(
            settings,
            cpu=None if args.no_pin else args.cpu,
            use_c=not args.no_c,
            mode=mode,
            command=_command_line(argv),
        )
    except BenchSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbenchmark interrupted; servers stopped", file=sys.stderr)
        return 130
    machine = results["machine"]
    print(f"spike.bench ({mode}) {results['date']}")
    print(
        f"machine: {machine['cpu_count']} CPUs, {machine['cpu_model']}; {machine['os']}; "
        f"{machine['python']}; {machine['pinning']}"
    )
    if machine.get("load_average_after"):
        print(
            f"load average (1, 5, 15 min): {machine.get('load_average_before')} before, "
            f"{machine['load_average_after']} after (other programs running add noise)"
        )
    print(format_table(results))
    for note in results["notes"]:
        print(f"note: {note}")
    if args.json:
        try:
            _write_json(args.json, results)
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"results saved to {args.json}")
    print(
        f"Rerun this with: {_command_line(argv)}  |  full run for the report page: "
        "uv run python -m spike.bench --json docs/data/benchmark.json  |  a short check: --quick"
    )
    spike_failed = [
        row
        for t in results["tests"].values()
        for row in t["rows"]
        if row["role"] == "spike" and "failure" in row
    ]
    if spike_failed:
        print(
            f"error: the spike itself could not be measured: {spike_failed[0]['failure']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
