"""How the benchmark's results are shown: the columns of every table, and the targets.

:data:`COLUMNS` is the one description of each test's table: the terminal
table here and the report page's Markdown tables (``hooks/benchmark.py``)
are both drawn from it. Nothing here measures anything.

This module imports only the standard library: the MkDocs hook loads it by
its path, so that building the site never imports the spike itself (a spike
broken on purpose fails the build where the terminal captures run it).
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a results table, shared by the terminal table and the report page."""

    text: str  # header in the terminal
    markdown: str  # header on the report page
    field: str  # the row's figure
    kind: str  # how it is shown: "us", "ms", "rate", "ratio" or "errors"


def _ratio(*fields: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(text, markdown, field, "ratio") for field, text, markdown in fields)


_C_FLOOR = ("vs_c_floor", "÷ C floor", "÷ C floor")
_PY_FLOOR = ("vs_python_floor", "÷ Py floor", "÷ Python floor")

#: The columns of each test's table after the server's name, in order.
COLUMNS: dict[str, tuple[Column, ...]] = {
    "round_trip": (
        Column("p50 us", "p50", "p50_us", "us"),
        Column("p99 us", "p99", "p99_us", "us"),
        Column("req/s", "Requests/s", "requests_per_s", "rate"),
        *_ratio(_C_FLOOR, _PY_FLOOR),
    ),
    "pipelined": (
        Column("msg/s", "Messages/s", "messages_per_s", "rate"),
        *_ratio(
            _C_FLOOR,
            _PY_FLOOR,
            ("vs_naive_lines", "÷ naive lines", "÷ naive lines"),
            ("vs_naive_json", "÷ naive JSON", "÷ naive JSON-lines"),
        ),
    ),
    "connections": (
        Column("req/s", "Requests/s", "requests_per_s", "rate"),
        Column("p50 ms", "p50", "p50_ms", "ms"),
        Column("p99 ms", "p99", "p99_ms", "ms"),
        Column("errors", "Errors", "errors", "errors"),
        *_ratio(
            ("vs_c_epoll", "÷ C epoll", "÷ C epoll"),
            ("vs_py_selectors", "÷ Py selectors", "÷ Python selectors"),
        ),
    ),
    "big_message": (
        Column("MiB/s", "MiB/s", "mib_per_s", "rate"),
        *_ratio(_C_FLOOR, _PY_FLOOR),
    ),
    "waits": (
        Column("req/s", "Requests/s", "requests_per_s", "rate"),
        Column("p50 ms", "p50", "p50_ms", "ms"),
        Column("p99 ms", "p99", "p99_ms", "ms"),
        Column("errors", "Errors", "errors", "errors"),
        *_ratio(("vs_threads", "÷ threads", "÷ threads")),
    ),
}


def text_cell(column: Column, row: dict[str, Any]) -> str:
    """A cell of the terminal table: plain ASCII units, ``-`` for a ratio with no base."""
    if column.kind == "ratio":
        ratio = row.get(column.field)
        return "-" if ratio is None else f"{ratio:.2f}x"
    value = row[column.field]
    if column.kind == "us":
        return f"{value:.1f}"
    if column.kind == "ms":
        return f"{value:.2f}"
    if column.kind == "rate":
        return f"{value:,.0f}"
    return str(value)


def markdown_ratio(ratio: float | None) -> str:
    """A ratio on the report page, with a multiplication sign; a dash when it has no base."""
    return "–" if ratio is None else f"{ratio:.2f}×"


def markdown_cell(column: Column, row: dict[str, Any], planned: int | None = None) -> str:
    """A cell of the report page's table: units shown, errors out of the requests made.

    ``planned`` is the number of requests a connections row made, for results
    files that do not record it per row.
    """
    if column.kind == "ratio":
        return markdown_ratio(row.get(column.field))
    value = row[column.field]
    if column.kind == "us":
        return f"{value:.1f} µs"
    if column.kind == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:,.0f} ms"
    if column.kind == "errors":
        return f"{value} of {row.get('requests', planned):,}"
    return f"{value:,.0f}"


def _text_block(columns: tuple[Column, ...], rows: list[dict[str, Any]]) -> list[str]:
    table = [["server", *(column.text for column in columns)]]
    for row in rows:
        if "failure" in row:
            table.append([row["label"], "failed (see notes)"] + [""] * (len(columns) - 1))
        else:
            table.append([row["label"], *(text_cell(column, row) for column in columns)])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = [
        "  "
        + "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    lines.insert(1, "  " + "  ".join("-" * w for w in widths))
    return lines


def format_table(results: dict[str, Any]) -> str:
    """The human-readable results: one block per test, then the targets."""
    lines: list[str] = []
    for test, columns in COLUMNS.items():
        if test in results["tests"]:
            lines.append("")
            lines.append(results["tests"][test]["title"])
            lines.extend(_text_block(columns, results["tests"][test]["rows"]))
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
