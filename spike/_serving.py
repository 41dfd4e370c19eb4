"""The "Serving on HOST:PORT" line: how a server says where it listens.

``spike-server`` prints it first, and so do the benchmark's reference
servers, so whoever starts one with ``--port 0`` learns the port from it.
:func:`wait_for_serving` is the one way the project does that: the
benchmark (``spike/bench/procs.py``) and the tests (``tests/helpers.py``)
both use it. ``hooks/captures.py`` keeps a copy of its own on purpose: it
checks the line as a user sees it, without the package's help.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading

from ._address import unbracket

__all__ = ["SERVING_LINE", "NotServing", "serving_port", "wait_for_serving"]

#: The first line ``spike-server`` prints; the port is the real one, also after ``--port 0``.
SERVING_LINE = re.compile(r"^Serving on (?P<host>\[[^\]]+\]|[^\s:]+):(?P<port>\d+)")


def serving_port(line: str) -> tuple[str, int] | None:
    """``(host, port)`` from a server's "Serving on HOST:PORT" line, or None."""
    match = SERVING_LINE.match(line)
    if match is None:
        return None
    return unbracket(match["host"]), int(match["port"])


class NotServing(RuntimeError):
    """A started server printed no "Serving on" line: its output ended, or
    the wait timed out. ``output`` holds the lines it printed."""

    def __init__(self, reason: str, output: list[str]) -> None:
        last = next((line for line in reversed(output) if line.strip()), "no output")
        super().__init__(f"{reason} ({last})")
        self.output = output


def wait_for_serving(
    proc: subprocess.Popen[bytes], timeout: float
) -> tuple[tuple[str, int], list[str]]:
    """Read ``proc``'s standard output until its "Serving on HOST:PORT" line.

    Returns ``(host, port)`` and the lines read, that one last; the rest of
    the output is left in ``proc.stdout`` for the caller. Raises
    :class:`NotServing` if the output ends first or no such line comes within
    ``timeout`` seconds; stopping the process is then the caller's job.
    """
    stdout = proc.stdout
    assert stdout is not None, "start the process with stdout=subprocess.PIPE"
    lines: list[str] = []
    found: queue.Queue[tuple[str, int] | None] = queue.Queue()

    # On a thread, so that a server that prints nothing cannot make the wait unbounded.
    def read() -> None:
        for raw in stdout:
            line = raw.decode(errors="replace").rstrip("\r\n")
            lines.append(line)
            address = serving_port(line)
            if address is not None:
                found.put(address)
                return
        found.put(None)

    threading.Thread(target=read, name="wait-for-serving", daemon=True).start()
    try:
        address = found.get(timeout=timeout)
    except queue.Empty:
        raise NotServing(f"no 'Serving on' line within {timeout:g} s", list(lines)) from None
    if address is None:
        try:
            status: int | None = proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            status = None
        ended = "its output ended" if status is None else f"it exited with status {status}"
        raise NotServing(f"{ended} before a 'Serving on' line", list(lines))
    return address, lines
