"""Running the plan: interleaved rounds, medians, paired ratios, targets, the JSON file.

Every case runs once per round, in a rotated order, and the figures reported
are medians over the rounds. A ratio of a row to its base (a floor, the
naive server, the same spike ``--quiet``) is the median of the per-round
ratios, so a slow spell of the machine cancels out instead of landing on one row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import math
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from spike._display import plural
from spike._limits import raise_open_file_limit
from spike.bench import load
from spike.bench.machine import load_average, machine_info
from spike.bench.plan import MESSAGE, TEST_TITLES, Case, Sizes, plan, subjects
from spike.bench.procs import BenchSetupError, ServerProcess, every_cpu, pin_to_cpu

SCHEMA = 1

# Targets (issues 13 and 17), evaluated for the default, logging server and
# printed, never asserted. Each compares the spike with what Python itself
# reaches in the same run: set against the C floor instead, they would pass
# or fail with how fast the machine's kernel path is, not with the spike.
TARGET_TEXT_VS_PY = 1.3  # plain-text round trip p50 / Python socket echo p50
TARGET_JSON_VS_NAIVE = 1.0  # JSON echo p50 / naive JSON-lines server p50
TARGET_CONNS_VS_SELECTORS = 0.8  # 1,000 connections req/s / one-thread selectors echo
TARGET_CONNS_P99_MS = 50.0
TARGET_PIPELINED_VS_LINES = 1.0  # messages/s / naive Python lines server
TARGET_PIPELINED_JSON_VS_NAIVE = 0.9  # JSON messages/s / naive JSON-lines server
# Ops that wait (issue 25): the pipe's rate against threads running the same op.
TARGET_WAIT_DEF_VS_THREADS = 0.9  # def op in the worker pool / a thread per connection
# async def op / a thread per connection, 1,000 clients arriving (connecting timed)
TARGET_WAIT_ASYNC_VS_THREADS = 1.5
# What the log may cost: the default server against the same one --quiet.
TARGET_LOG_ROUND_TRIP = 1.15  # p50 ratio, at most
TARGET_LOG_THROUGHPUT = 0.8  # pipelined and 1,000-connection rates, at least

# (name, measure, test, row id, field, compare, limit); {many} is "N connections",
# {crowd} the clients that arrive to call the async op that waits.
TARGETS: tuple[tuple[str, str, str, str, str, str, float], ...] = (
    (
        "plain-text round trip",
        "p50 ÷ Python floor",
        "round_trip",
        "spike_text",
        "vs_python_floor",
        "<=",
        TARGET_TEXT_VS_PY,
    ),
    (
        "JSON echo round trip",
        "p50 ÷ naive JSON-lines",
        "round_trip",
        "spike_json",
        "vs_naive_json",
        "<=",
        TARGET_JSON_VS_NAIVE,
    ),
    (
        "{many}: throughput",
        "req/s ÷ Python selectors",
        "connections",
        "spike",
        "vs_py_selectors",
        ">=",
        TARGET_CONNS_VS_SELECTORS,
    ),
    ("{many}: p99", "p99 ms", "connections", "spike", "p99_ms", "<=", TARGET_CONNS_P99_MS),
    ("{many}: errors", "failed requests", "connections", "spike", "errors", "<=", 0),
    (
        "pipelined plain text",
        "msg/s ÷ naive lines",
        "pipelined",
        "spike",
        "vs_naive_lines",
        ">=",
        TARGET_PIPELINED_VS_LINES,
    ),
    (
        "pipelined JSON echo",
        "msg/s ÷ naive JSON-lines",
        "pipelined",
        "spike_json",
        "vs_naive_json",
        ">=",
        TARGET_PIPELINED_JSON_VS_NAIVE,
    ),
    (
        "cost of the log: round trip",
        "p50 ÷ --quiet",
        "round_trip",
        "spike_text",
        "vs_quiet",
        "<=",
        TARGET_LOG_ROUND_TRIP,
    ),
    (
        "cost of the log: pipelined",
        "msg/s ÷ --quiet",
        "pipelined",
        "spike",
        "vs_quiet",
        ">=",
        TARGET_LOG_THROUGHPUT,
    ),
    (
        "cost of the log: {many}",
        "req/s ÷ --quiet",
        "connections",
        "spike",
        "vs_quiet",
        ">=",
        TARGET_LOG_THROUGHPUT,
    ),
    (
        "ops that wait: def op, 32 connections",
        "req/s ÷ threads",
        "waits",
        "spike_def",
        "vs_threads",
        ">=",
        TARGET_WAIT_DEF_VS_THREADS,
    ),
    (
        "ops that wait: async def op, {crowd}",
        "req/s ÷ threads",
        "waits",
        "spike_async",
        "vs_threads",
        ">=",
        TARGET_WAIT_ASYNC_VS_THREADS,
    ),
    (
        "ops that wait: async def op, {crowd}, every CPU",
        "req/s ÷ threads",
        "waits",
        "spike_async_spread",
        "vs_threads",
        ">=",
        TARGET_WAIT_ASYNC_VS_THREADS,
    ),
)

_FIGURE = {
    "round_trip": "p50_us",
    "pipelined": "messages_per_s",
    "connections": "requests_per_s",
    "big_message": "mib_per_s",
    "waits": "requests_per_s",
}
# (test, field, base row, rows compared: None for every row). A time divided
# by the base's time (above 1 = slower), a rate by the base's rate (below 1 =
# slower): against the floors, the naive Python servers, and the default
# (logging) spike against the same server --quiet.
RATIOS: tuple[tuple[str, str, str, tuple[str, ...] | None], ...] = (
    ("round_trip", "vs_c_floor", "c_blocking", None),
    ("round_trip", "vs_python_floor", "py_echo", None),
    ("pipelined", "vs_c_floor", "c_blocking", None),
    ("pipelined", "vs_python_floor", "py_echo", None),
    ("big_message", "vs_c_floor", "c_blocking", None),
    ("big_message", "vs_python_floor", "py_echo", None),
    ("connections", "vs_c_epoll", "c_epoll", None),
    ("connections", "vs_py_selectors", "py_selectors", None),
    ("round_trip", "vs_naive_json", "py_json", ("spike_json", "spike_quiet_json")),
    ("round_trip", "vs_quiet", "spike_quiet_text", ("spike_text",)),
    ("round_trip", "vs_quiet", "spike_quiet_json", ("spike_json",)),
    ("pipelined", "vs_naive_lines", "py_lines", ("spike", "spike_quiet")),
    ("pipelined", "vs_naive_json", "py_json", ("spike_json", "spike_quiet_json")),
    ("pipelined", "vs_quiet", "spike_quiet", ("spike",)),
    ("pipelined", "vs_quiet", "spike_quiet_json", ("spike_json",)),
    ("connections", "vs_quiet", "spike_quiet", ("spike",)),
    ("waits", "vs_threads", "threads_def", ("spike_def",)),
    ("waits", "vs_threads", "threads_async", ("spike_async", "floor_async")),
    ("waits", "vs_threads", "threads_async_spread", ("spike_async_spread",)),
    ("waits", "vs_threads", "threads_async_held", ("spike_async_held",)),
)


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries the results)."""
    print(text, file=sys.stderr, flush=True)


def _describe(test: str, stats: dict[str, Any]) -> str:
    if test == "round_trip":
        return f"p50 {stats['p50_us']:8.1f} us  p99 {stats['p99_us']:8.1f} us"
    if test == "pipelined":
        return f"{stats['messages_per_s']:12,.0f} msg/s"
    if test in ("connections", "waits"):
        return (
            f"{stats['requests_per_s']:10,.0f} req/s  p99 {stats['p99_ms']:.1f} ms  errors "
            f"{stats['errors']}"
        )
    return f"{stats['mib_per_s']:8.1f} MiB/s"


# ---------------------------------------------------------------- rounds


def run_rounds(
    cases: list[Case], servers: dict[str, ServerProcess], rounds: int, notes: list[str]
) -> None:
    """Runs every case once per round; a case that fails is noted and skipped from then on."""
    for number in range(rounds):
        # Rotate the order each round so no case always runs first or last.
        shift = number % len(cases)
        for case in cases[shift:] + cases[:shift]:
            server = servers.get(case.subject)
            if server is not None and not case.failure:
                _run_case(case, server, (number + 1, rounds), notes)


def _run_case(
    case: Case, server: ServerProcess, round_of: tuple[int, int], notes: list[str]
) -> None:
    where = "round {}/{}".format(*round_of)
    try:
        with every_cpu() if case.spread else contextlib.nullcontext():
            stats = case.run(server)
    except (load.LoadError, OSError) as exc:
        state = (
            "" if server.alive() else f" (server exited: {server.last_output() or 'no output'})"
        )
        case.failure = f"{type(exc).__name__}: {exc}{state}"
        notes.append(f"{case.label} failed in round {round_of[0]}: {case.failure}")
        progress(f"  {where}  {case.label:<36} FAILED: {case.failure}")
        return
    case.rounds.append(stats)
    progress(f"  {where}  {case.label:<36} {_describe(case.test, stats)}")


# ---------------------------------------------------------------- results


def median_of_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds; errors and requests add up instead."""
    merged: dict[str, Any] = {}
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        # Errors add up: one error in any round is an error of the run.
        merged[key] = sum(values) if key in ("errors", "requests") else statistics.median(values)
    return merged


def paired_ratio(case: Case, base: Case | None, key: str) -> float | None:
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


def _row(case: Case) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": case.key,
        "subject": case.subject,
        "label": case.label,
        "role": case.role,
    }
    if case.rounds:
        row.update(median_of_rounds(case.rounds))
        row["rounds"] = len(case.rounds)
    if case.failure:
        row["failure"] = case.failure
    return row


def results(cases: list[Case]) -> dict[str, Any]:
    """The ``tests`` part of the JSON: per test a title and its rows, ratios included."""
    rows: dict[str, list[tuple[Case, dict[str, Any]]]] = {}
    for case in cases:
        rows.setdefault(case.test, []).append((case, _row(case)))
    for test, field, base_key, compared in RATIOS:
        pairs = rows.get(test, [])
        base = next((c for c, _ in pairs if c.key == base_key), None)
        figure = _FIGURE[test]
        for case, row in pairs:
            if figure in row and (compared is None or case.key in compared):
                row[field] = paired_ratio(case, base, figure)
    return {
        test: {"title": TEST_TITLES[test], "rows": [row for _, row in pairs]}
        for test, pairs in rows.items()
    }


def targets(tests: dict[str, Any], connections: int, crowd: int) -> list[dict[str, Any]]:
    """The spike's targets, for the default (logging) server, each met, missed or not measured."""
    found: list[dict[str, Any]] = []
    for template, measure, test, row_id, field, compare, limit in TARGETS:
        name = template.format(
            many=f"{connections:,} connections", crowd=f"{crowd:,} arriving clients"
        )
        row = next((r for r in tests.get(test, {}).get("rows", []) if r["id"] == row_id), None)
        value = None if row is None or "failure" in row else row.get(field)
        if value is None:
            found.append({"name": name, "measure": measure, "met": None, "detail": "not measured"})
            continue
        met = value <= limit if compare == "<=" else value >= limit
        found.append(
            {
                "name": name,
                "measure": measure,
                "value": value,
                "limit": limit,
                "compare": compare,
                "met": met,
            }
        )
    return found


# ---------------------------------------------------------------- the run


def _limits(sizes: Sizes, notes: list[str]) -> None:
    cap = load.max_select_sockets()
    for field in ("connections", "wait_connections"):
        wanted = getattr(sizes, field)
        if cap is not None and wanted > cap:
            notes.append(
                f"{field.replace('_', ' ')} lowered from {wanted} to {cap}: select() on this "
                "OS watches at most 512 sockets."
            )
            setattr(sizes, field, cap)
    limit_note = raise_open_file_limit(max(sizes.connections, sizes.wait_connections) + 256)
    if limit_note:
        notes.append(limit_note)


def run(sizes: Sizes, *, cpu: int | None, use_c: bool, mode: str, command: str) -> dict[str, Any]:
    """Runs the whole benchmark and returns the results as a JSON-ready dict."""
    notes: list[str] = []
    load_before = load_average()
    pinning = pin_to_cpu(cpu)
    _limits(sizes, notes)
    progress(f"spike.bench: {mode} run, {plural(sizes.rounds, 'round')}; {pinning}")
    available = subjects(sizes, use_c, notes)
    cases = plan(sizes, available)
    servers: dict[str, ServerProcess] = {}
    try:
        for key in dict.fromkeys(case.subject for case in cases):
            subject = available[key]
            try:
                # A spread subject's process inherits every CPU from this thread.
                with every_cpu() if subject.spread else contextlib.nullcontext():
                    server = ServerProcess(
                        subject.label, subject.command, None if subject.spread else cpu
                    )
                    servers[key] = server.start()
                progress(f"  started {subject.label} on {servers[key].host}:{servers[key].port}")
            except BenchSetupError as exc:
                notes.append(f"skipped: {exc}")
                progress(f"  skipped: {exc}")
        run_rounds(cases, servers, sizes.rounds, notes)
    finally:
        for server in servers.values():
            server.stop()
    for key, server in servers.items():
        if server.dropped_log_lines:
            notes.append(
                f"{available[key].label} dropped log lines (its log output could not keep up), "
                "so its figures include less logging than it was asked to do."
            )
    for case in cases:
        if case.subject not in servers and not case.failure:
            case.failure = "server did not start"
    tests = results(cases)
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
        "settings": dataclasses.asdict(sizes),
        "notes": notes,
        "tests": tests,
        "targets": targets(tests, sizes.connections, sizes.wait_connections),
    }


# ---------------------------------------------------------------- saving


def command_line(argv: list[str]) -> str:
    """How to rerun this run, as one shell line."""
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


def write_json(path: Path, results: dict[str, Any]) -> None:
    """Saves the results (rounded to six digits) to ``path``, replacing it at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(_rounded(results), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
