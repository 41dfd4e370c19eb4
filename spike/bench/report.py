"""What ``spike.bench`` reports besides the numbers: the machine, and the text table.

Kept apart from the measuring code so that ``bench`` reads as the plan of the
run; nothing here measures anything.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spike.bench.procs import find_c_compiler


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except OSError:
            pass
    return platform.processor() or "unknown"


def _compiler_version() -> str | None:
    compiler = find_c_compiler()
    if compiler is None:
        return None
    try:
        out = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    first = out.stdout.strip().splitlines()
    return first[0] if first else None


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None on Windows, which has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info(pinning: str, load_before: list[float] | None = None) -> dict[str, Any]:
    """The facts about this machine that belong next to its results."""
    try:
        import zmq  # noqa: PLC0415  (optional: the 'bench' extra)

        pyzmq = zmq.__version__
        libzmq = zmq.zmq_version()
    except ImportError:
        pyzmq = libzmq = None  # type: ignore[assignment, unused-ignore]
    # Busy neighbours show up here; a high figure means noisier numbers.
    load_after = load_average()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "pinning": pinning,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "c_compiler": _compiler_version(),
        "pyzmq": pyzmq,
        "libzmq": libzmq,
    }


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(results: dict[str, Any]) -> str:
    """The human-readable results: one block per test, then the targets."""
    lines: list[str] = []
    tests = results["tests"]

    def block(test: str, header: list[str], cells: Callable[[dict[str, Any]], list[str]]) -> None:
        if test not in tests:
            return
        rows = [header]
        for row in tests[test]["rows"]:
            if "failure" in row:
                rows.append([row["label"], "failed (see notes)"] + [""] * (len(header) - 2))
            else:
                rows.append(cells(row))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines.append("")
        lines.append(tests[test]["title"])
        for number, r in enumerate(rows):
            lines.append(
                "  "
                + "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(r, widths, strict=True))
                )
            )
            if number == 0:
                lines.append("  " + "  ".join("-" * w for w in widths))

    block(
        "round_trip",
        ["server", "p50 us", "p99 us", "req/s", "÷ C floor", "÷ Py floor"],
        lambda r: [
            r["label"],
            f"{r['p50_us']:.1f}",
            f"{r['p99_us']:.1f}",
            f"{r['requests_per_s']:,.0f}",
            _fmt_ratio(r.get("vs_c_floor")),
            _fmt_ratio(r.get("vs_python_floor")),
        ],
    )
    block(
        "pipelined",
        ["server", "msg/s", "÷ C floor", "÷ Py floor", "÷ naive lines"],
        lambda r: [
            r["label"],
            f"{r['messages_per_s']:,.0f}",
            _fmt_ratio(r.get("vs_c_floor")),
            _fmt_ratio(r.get("vs_python_floor")),
            _fmt_ratio(r.get("vs_naive_lines")),
        ],
    )
    block(
        "connections",
        ["server", "req/s", "p50 ms", "p99 ms", "errors", "÷ C epoll"],
        lambda r: [
            r["label"],
            f"{r['requests_per_s']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            str(r["errors"]),
            _fmt_ratio(r.get("vs_c_epoll")),
        ],
    )
    block(
        "big_message",
        ["server", "MiB/s", "÷ C floor", "÷ Py floor"],
        lambda r: [
            r["label"],
            f"{r['mib_per_s']:,.0f}",
            _fmt_ratio(r.get("vs_c_floor")),
            _fmt_ratio(r.get("vs_python_floor")),
        ],
    )
    lines.append("")
    lines.append("Targets for the spike (evaluated, not asserted)")
    for target in results["targets"]:
        if target["met"] is None and "value" not in target:
            lines.append(f"  n/a   {target['name']}: {target.get('detail', 'not measured')}")
            continue
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target["met"]]
        value = target["value"]
        shown = (
            "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
        )
        lines.append(
            f"  {verdict}  {target['name']}: {target['measure']} = {shown} (target "
            f"{target['compare']} {target['limit']})"
        )
    return "\n".join(lines)
