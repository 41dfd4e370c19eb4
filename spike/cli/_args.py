"""Shim: the argument helpers live in ``spike/_args.py``, below both the
command lines and the benchmark. ``spike/cli/_server.py`` still imports
them from here; once it imports ``.._args``, delete this module."""

from __future__ import annotations

from .._args import Parser, host, port, positive_int, seconds, utf8_text

__all__ = ["Parser", "host", "port", "positive_int", "seconds", "utf8_text"]
