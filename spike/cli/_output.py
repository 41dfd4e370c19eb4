"""What every front end does with its output: set it up, and write a line."""

from __future__ import annotations

import contextlib
import sys
from typing import TextIO

__all__ = ["emit", "prepare_output"]


def prepare_output() -> None:
    """Line-buffered output (a parent reading a pipe sees each line at once)
    that never fails on characters the console cannot show."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True, errors="backslashreplace")


def emit(line: str, stream: TextIO | None = None) -> None:
    """One line on ``stream`` (standard output by default). A character the
    console cannot show is escaped (see :func:`prepare_output`); an output
    that was closed (``| head``) leaves nothing to tell, and must not turn
    into a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=stream, flush=True)
