"""The facts about the machine that belong next to its benchmark results."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from spike.bench.procs import find_c_compiler
from spike.protocol import JSON_BACKEND


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
    if sys.platform == "win32":
        return None
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # POSIX says it may be unobtainable
        return None


def json_codec() -> str:
    """The JSON codec the pipe uses here (its servers run this interpreter), with its version."""
    if JSON_BACKEND == "orjson":
        import orjson  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415

        return f"orjson {orjson.__version__}"
    return "json (the standard library)"


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
        "json_codec": json_codec(),
        "pinning": pinning,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "c_compiler": _compiler_version(),
        "pyzmq": pyzmq,
        "libzmq": libzmq,
    }
