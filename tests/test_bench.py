"""The benchmark keeps working: a tiny real run, its results file, and the page hook.

The run is real (real server processes, real sockets, real C build where a
compiler exists) but tiny, so it checks that every measurement completes
and is recorded, never how fast anything is: timings are not asserted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_file

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "spike" / "benchmark.md"
SAVED = ROOT / "docs" / "data" / "benchmark.json"
TINY = [
    "--quick",
    "--rounds", "1",
    "--requests", "50",
    "--warmup", "5",
    "--pipeline", "500",
    "--connections", "20",
    "--conn-requests", "3",
    "--big-mib", "0.25",
    "--wait-connections", "20",
]  # fmt: skip
RUN_TIMEOUT = 90
HAS_C = sys.platform.startswith("linux") and any(shutil.which(c) for c in ("cc", "gcc", "clang"))
# The run pins itself to CPU 0 where it can (Linux, CPU 0 allowed).
PINS = sys.platform == "linux" and 0 in os.sched_getaffinity(0)


def _bench(*args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spike.bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _load_hook() -> ModuleType:
    return load_file(ROOT / "hooks" / "benchmark.py", "benchmark_hook")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = _bench(*TINY, "--json", str(out))
    return done, out


def _rows(results: dict, test: str) -> dict[str, dict]:
    return {row["id"]: row for row in results["tests"][test]["rows"]}


def test_tiny_run_succeeds_and_explains_itself(tiny_run):
    done, out = tiny_run
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    # Progress on stderr, the table and the rerun hint on stdout.
    assert "round 1/1" in done.stderr
    for heading in (
        "Round trip on one connection",
        "Many connections at once",
        "Ops that wait",
        "Targets for the spike",
    ):
        assert heading in done.stdout
    assert f"results saved to {out}" in done.stdout
    assert "Rerun this with: python -m spike.bench --quick" in done.stdout


def test_results_file_has_every_measurement(tiny_run):
    _done, out = tiny_run
    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["schema"] == 1
    assert results["mode"] == "quick"
    machine = results["machine"]
    assert machine["cpu_count"] >= 1
    assert machine["os"] and machine["python"] and machine["cpu_model"] and machine["pinning"]
    from spike.protocol import JSON_BACKEND

    assert machine["json_codec"].split()[0] == JSON_BACKEND
    assert results["settings"]["connections"] == 20

    expected = {
        "round_trip": {
            "py_echo",
            "spike_text",
            "spike_quiet_text",
            "spike_json",
            "spike_quiet_json",
            "spike_client",
            "py_json",
            "py_selectors",
            "http",
        },
        "pipelined": {
            "py_echo",
            "py_lines",
            "py_lines_sendall",
            "py_json",
            "py_json_sendall",
            "spike",
            "spike_quiet",
            "spike_json",
            "spike_quiet_json",
        },
        "connections": {"py_selectors", "spike", "spike_quiet"},
        "big_message": {"py_echo", "spike_big"},
        "waits": {
            "spike_def",
            "threads_def",
            "spike_async",
            "threads_async",
            "spike_async_held",
            "threads_async_held",
            "floor_async",
        },
    }
    if PINS:  # the pair on every CPU exists only when the rest share one
        expected["waits"] |= {"spike_async_spread", "threads_async_spread"}
    if HAS_C:
        expected["round_trip"].add("c_blocking")
        expected["connections"].add("c_epoll")
    for test, ids in expected.items():
        rows = _rows(results, test)
        assert ids <= set(rows), f"{test}: missing {ids - set(rows)}"
        for row in rows.values():
            assert "failure" not in row, f"{test}/{row['id']}: {row['failure']}"
            numbers = {
                k: v
                for k, v in row.items()
                if isinstance(v, (int, float)) and not k.startswith("vs_")
            }
            for key, value in numbers.items():
                if key != "errors":
                    assert value > 0 and math.isfinite(value), (
                        f"{test}/{row['id']}/{key} = {value}"
                    )

    for row in _rows(results, "connections").values():
        assert row["errors"] == 0
        assert row["requests"] == 20 * 3
    waits = _rows(results, "waits")
    for row in waits.values():
        assert row["errors"] == 0
    assert waits["spike_def"]["requests"] == waits["threads_def"]["requests"] == 32 * 15
    crowd = ("spike_async", "threads_async", "spike_async_held", "threads_async_held")
    crowd += ("floor_async",) + (("spike_async_spread", "threads_async_spread") if PINS else ())
    for row_id in crowd:
        assert waits[row_id]["requests"] == 20
        # An op that waits 100 ms cannot be answered sooner.
        assert waits[row_id]["p50_ms"] >= 100, waits[row_id]
    for row_id in ("spike_def", "spike_async", "spike_async_held", "floor_async"):
        assert waits[row_id]["vs_threads"] > 0
    if PINS:
        assert waits["spike_async_spread"]["vs_threads"] > 0
    spike_text = _rows(results, "round_trip")["spike_text"]
    assert spike_text["vs_python_floor"] > 0
    if HAS_C:
        assert spike_text["vs_c_floor"] > 0
        assert _rows(results, "connections")["spike"]["vs_c_epoll"] > 0

    # The default (logging) server against the same server --quiet, and the
    # naive Python servers.
    assert _rows(results, "round_trip")["spike_text"]["vs_quiet"] > 0
    assert _rows(results, "round_trip")["spike_json"]["vs_naive_json"] > 0
    assert _rows(results, "pipelined")["spike"]["vs_naive_lines"] > 0
    assert _rows(results, "pipelined")["spike_json"]["vs_naive_json"] > 0
    assert _rows(results, "connections")["spike"]["vs_py_selectors"] > 0
    assert _rows(results, "pipelined")["spike"]["vs_quiet"] > 0
    assert _rows(results, "connections")["spike"]["vs_quiet"] > 0

    targets = {t["name"]: t for t in results["targets"]}
    names = {
        "plain-text round trip",
        "JSON echo round trip",
        "20 connections: p99",
        "20 connections: errors",
        "pipelined plain text",
        "cost of the log: round trip",
        "cost of the log: pipelined",
        "cost of the log: 20 connections",
        "ops that wait: def op, 32 connections",
        "ops that wait: async def op, 20 arriving clients",
    }
    if PINS:
        names.add("ops that wait: async def op, 20 arriving clients, every CPU")
    assert names <= set(targets)
    # Evaluated, whatever the outcome: a verdict, never a missing value.
    for name in names:
        assert targets[name]["met"] in (True, False), targets[name]
    assert targets["plain-text round trip"]["measure"] == "p50 ÷ Python floor"
    assert targets["20 connections: errors"]["met"] is True


def test_zeromq_is_measured_or_skipped_with_a_note(tiny_run):
    _, out = tiny_run
    results = json.loads(out.read_text(encoding="utf-8"))
    if "zmq" in _rows(results, "round_trip"):
        assert _rows(results, "round_trip")["zmq"]["p50_us"] > 0
    else:
        assert any("ZeroMQ skipped" in note for note in results["notes"])


def test_without_c_the_floors_are_skipped_with_a_note(tmp_path):
    out = tmp_path / "no-c.json"
    done = _bench(*TINY, "--no-c", "--json", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text(encoding="utf-8"))
    assert "c_blocking" not in _rows(results, "round_trip")
    assert any("C floors skipped" in note for note in results["notes"])
    # The spike is still compared with the Python floor.
    assert _rows(results, "round_trip")["spike_text"]["vs_c_floor"] is None
    assert _rows(results, "round_trip")["spike_text"]["vs_python_floor"] > 0


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rounds", "0"], "argument --rounds: must be at least 1, not 0"),
        (["--warmup", "-1"], "argument --warmup: must be at least 0, not -1"),
        (["--cpu", "one"], "argument --cpu: not a whole number: 'one'"),
        (["--big-mib", "0"], "argument --big-mib: MiB must be more than 0, not 0"),
        (["--big-mib", "nan"], "argument --big-mib: not a number of MiB: 'nan'"),
        (["--big-mib", "inf"], "argument --big-mib: MiB must be a finite number, not inf"),
    ],
)
def test_bad_flag_is_one_line_without_traceback(args: list[str], says: str) -> None:
    done = _bench(*args, timeout=30)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"python -m spike.bench: error: {says} (see python -m spike.bench --help)"
    ]


def test_hook_renders_the_page_from_a_results_file(tiny_run):
    _, out = tiny_run
    hook = _load_hook()
    results = hook.load_results(out)
    page = hook.render_page(PAGE.read_text(encoding="utf-8"), results)
    assert "<!-- benchmark:" not in page
    assert "{{bench" not in page
    # A Markdown table with the spike's row and the floors' ratios...
    assert "| Server | p50 | p99 | Requests/s | ÷ C floor | ÷ Python floor |" in page
    # ...the cost of the log, default beside --quiet...
    assert "| Measure | Default (logging) | `--quiet` | Default ÷ quiet |" in page
    log_rows = [line for line in page.splitlines() if line.startswith("| Pipelined messages/s |")]
    assert len(log_rows) == 1 and "not measured" not in log_rows[0]
    spike_line = next(
        line
        for line in page.splitlines()
        if line.startswith("| **spike, plain text** |") and "µs" in line
    )
    assert spike_line.count("|") == 7
    # ...ops that wait, against a thread per connection...
    assert "| Server | Requests/s | p50 | p99 | Errors | ÷ threads |" in page
    assert "| **spike, async def op: 20 clients connect and call, 100 ms** |" in page
    assert "| **spike, the same on 20 connections already open** |" in page
    # ...an inline SVG chart with a bar per measured round trip...
    assert page.count('<svg class="bench-chart"') == 2
    assert page.count("<rect") >= len(results["tests"]["round_trip"]["rows"])
    # ...and the run's machine and command.
    assert results["machine"]["python"] in page
    assert "python -m spike.bench" in page


def test_saved_results_render(tmp_path):
    hook = _load_hook()
    page = hook.render_page(PAGE.read_text(encoding="utf-8"), hook.load_results(SAVED))
    assert "| **spike, JSON echo** |" in page
    assert "n/a" not in page, "the committed results lack a value the page quotes"
    log_cost = [line for line in page.splitlines() if line.startswith("| Pipelined messages/s |")]
    assert log_cost and "not measured" not in log_cost[0], "no default-vs-quiet figures saved"


def test_hook_errors_are_clear(tmp_path):
    hook = _load_hook()
    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match=r"python -m spike\.bench --json"):
        hook.load_results(tmp_path / "missing.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{}", encoding="utf-8")
    with pytest.raises(PluginError, match="rerun the benchmark"):
        hook.load_results(broken)
    results = hook.load_results(SAVED)
    with pytest.raises(PluginError, match="unknown marker"):
        hook.render_page("<!-- benchmark:nonsense -->\n", results)


@pytest.mark.skipif(not PINS, reason="pinning exists only on Linux")
def test_every_cpu_lets_a_pinned_run_spread_and_pins_it_again() -> None:
    """The rows "on every CPU": their server process and the client's thread
    may use every CPU the run could use before it pinned itself; then the
    client is pinned again, and servers started outside stay pinned."""
    script = """
import os, subprocess, sys
from spike.bench.procs import every_cpu, pin_to_cpu, pinned
before = sorted(os.sched_getaffinity(0))
assert not pinned()
pin_to_cpu(0)
child = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
with every_cpu():
    inside = sorted(os.sched_getaffinity(0))
    spread = subprocess.run(child, capture_output=True, text=True).stdout.strip()
after = sorted(os.sched_getaffinity(0))
still = subprocess.run(child, capture_output=True, text=True).stdout.strip()
print(before, inside, spread, after, still, pinned(), sep="|")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    before, inside, spread, after, still, is_pinned = done.stdout.strip().split("|")
    assert inside == spread == before
    assert after == still == "[0]"
    assert is_pinned == "True"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="pinning exists only on Linux")
def test_impossible_cpu_is_one_clear_line():
    done = _bench("--quick", "--cpu", "4096", timeout=30)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot pin to CPU 4096")


@pytest.mark.parametrize("loop", ["many_connections", "arrivals"])
def test_load_generator_counts_every_lost_request(loop: str):
    """A server that hangs up on everyone must show up as errors, not as a fast run."""
    import socket
    import threading

    from spike.bench import load

    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def hang_up_on_everyone() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.close()

    thread = threading.Thread(target=hang_up_on_everyone, daemon=True)
    thread.start()
    try:
        if loop == "many_connections":
            timed = load.many_connections(
                "127.0.0.1", port, "hello", connections=10, requests_each=3, timeout_s=10
            )
        else:
            timed = load.arrivals("127.0.0.1", port, "hello", clients=30, timeout_s=10)
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()
    assert timed.errors == 10 * 3
    assert timed.latencies_ns == []


WAIT_REQUEST = '{"op":"wait_async","ms":100}'
WAIT_REPLY = '{"ok":true,"result":{"waited_ms":100}}'


@pytest.mark.parametrize(
    "server",
    [
        ["spike.server", "--port", "0", "--quiet", "--ops", "spike.bench.wait_ops:ops"],
        ["spike.bench.servers", "waits"],
    ],
    ids=["spike", "threads"],
)
def test_arrivals_time_each_client_from_its_connect(server: list[str]) -> None:
    """Clients that arrive at once against a real server: every one is answered,
    and nothing is answered before the op's 100 ms have passed since its connect."""
    from spike.bench import load
    from spike.bench.procs import ServerProcess, python_command

    with ServerProcess(server[0], python_command(*server), None) as srv:
        timed = load.arrivals(srv.host, srv.port, WAIT_REQUEST, 50, reply=WAIT_REPLY)
        wrong = load.arrivals(srv.host, srv.port, WAIT_REQUEST, 3, reply="not this")
    assert timed.errors == 0
    assert len(timed.latencies_ns) == 50
    # asyncio may fire a timer up to one tick of its clock early (15.6 ms on Windows).
    tick = time.get_clock_info("monotonic").resolution
    assert min(timed.latencies_ns) >= (0.1 - 2 * tick) * 1e9
    assert timed.elapsed_s >= 0.1 - 2 * tick
    # The batch ends with the last reply, so no latency is longer than it.
    assert max(timed.latencies_ns) <= timed.elapsed_s * 1e9
    assert wrong.errors == 3  # answered, but not with the expected reply


def test_arrivals_count_refused_and_unanswered_clients() -> None:
    """A port nobody listens on refuses every client; a listener that never
    accepts leaves every request unanswered at the deadline. Both are errors."""
    import socket

    from helpers import free_port

    from spike.bench import load

    refused = load.arrivals("127.0.0.1", free_port(), "hello", 5, timeout_s=10)
    assert refused.errors == 5 and refused.latencies_ns == []

    with socket.create_server(("127.0.0.1", 0), backlog=16) as silent:
        timed = load.arrivals("127.0.0.1", silent.getsockname()[1], "hello", 5, timeout_s=0.5)
    assert timed.errors == 5 and timed.latencies_ns == []


def test_a_case_that_fails_is_noted_and_the_run_goes_on() -> None:
    """A reference server that dies: its case fails once, with a note, and the rest runs."""
    from spike.bench import load, runner
    from spike.bench.plan import Case, round_trip_stats
    from spike.bench.procs import ServerProcess, python_command

    echo = python_command("spike.bench.servers", "echo")

    def text_rt(srv: ServerProcess) -> dict:
        return round_trip_stats(load.text_round_trips(srv.host, srv.port, "hi", 20, 2))

    cases = [
        Case("round_trip", "alive", "alive", "alive echo", "floor", text_rt),
        Case("round_trip", "dead", "dead", "dead echo", "reference", text_rt),
    ]
    notes: list[str] = []
    with ServerProcess("alive", echo, None) as alive, ServerProcess("dead", echo, None) as dead:
        dead.stop()  # a real server that has gone away: connections are refused
        runner.run_rounds(cases, {"alive": alive, "dead": dead}, 2, notes)

    assert len(notes) == 1 and notes[0].startswith("dead echo failed in round 1: "), notes
    rows = {row["id"]: row for row in runner.results(cases)["round_trip"]["rows"]}
    assert rows["alive"]["rounds"] == 2 and "failure" not in rows["alive"]
    assert "server exited" in rows["dead"]["failure"]
    assert "rounds" not in rows["dead"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc: Linux only")
def test_server_cpu_per_message_is_measured_for_every_server() -> None:
    # --baseline: a checkout's spike beside this one (here the same checkout).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "spike.bench.cpu",
            "--rounds",
            "1",
            "--messages",
            "600",
            "--baseline",
            str(ROOT),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for workload in ("round-trip-json", "pipelined-json", "round-trip-text", "pipelined-text"):
        assert workload in lines
    rows = [line for line in lines if " us (user " in line]
    assert len(rows) == 13 + 4
    assert sum(f"spike at {ROOT}" in row for row in rows) == 4
    for row in rows:
        assert float(row.split(" us (user ")[0].split()[-1]) > 0, row
    assert lines[-1] == (
        f"Rerun this with: python -m spike.bench.cpu --rounds 1 --messages 600 --baseline {ROOT}"
    )
    missing = subprocess.run(
        [sys.executable, "-m", "spike.bench.cpu", "--baseline", str(ROOT / "docs")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert missing.returncode == 2
    assert "--baseline" in missing.stderr and "no spike/server there" in missing.stderr
