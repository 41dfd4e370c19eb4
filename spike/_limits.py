"""Operating-system limits the server, the benchmark and the tests share."""

from __future__ import annotations

import sys


def raise_open_file_limit(wanted: int) -> str:
    """Lift the soft limit on open files (often 1024 on Linux, 256 on macOS) toward ``wanted``.

    Each connection is a file descriptor, so the default limit caps how many
    clients one process can hold. Returns a note when the limit stays below
    ``wanted``, or an empty string (also on Windows, which has no such limit
    on sockets).
    """
    if sys.platform == "win32":
        return ""
    import resource  # noqa: PLC0415  (POSIX only; the check above is what mypy reads)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return ""
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    for value in (target, min(target, 10240)):  # macOS refuses more than OPEN_MAX
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
        except (ValueError, OSError):
            continue
        soft = value
        break
    return "" if soft >= wanted else f"open-file limit is {soft}, below the {wanted} needed"
