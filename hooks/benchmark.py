"""MkDocs hook: put the saved benchmark results on "How fast is the pipe?".

The numbers come from docs/data/benchmark.json, written by a real run of
``python -m spike.bench --json docs/data/benchmark.json``. At build time
``on_page_markdown`` replaces markers in docs/spike/benchmark.md:

``<!-- benchmark:machine -->``   where and when the run happened, and how
``<!-- benchmark:message -->``   the message every row sent, as the run saved it
``<!-- benchmark:table-TEST -->``  one test's table, with ratios to the floors
                                 (TEST: round_trip, pipelined, connections, big_message,
                                 waits)
``<!-- benchmark:chart -->``     round-trip bar chart (inline SVG, prints in a PDF)
``<!-- benchmark:conn-chart -->``  1,000-connection throughput bar chart
``<!-- benchmark:log-cost -->``  the default (logging) server beside ``--quiet``
``<!-- benchmark:targets -->``   the spike's targets, met or missed
``<!-- benchmark:notes -->``     what the run skipped, and why

and inline tokens such as ``{{bench round_trip http vs_c_floor}}`` (test, row
id, field) with the formatted value, so the prose never repeats a number by
hand. A missing results file or a marker left unknown fails the build.
"""

from __future__ import annotations

import datetime as _dt
import functools
import html
import importlib.util
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from mkdocs.exceptions import PluginError


def _load_report():
    # The benchmark's column spec, spike/bench/report.py (standard library
    # only), loaded by its path: importing `spike.bench.report` would import
    # the spike package, and a spike broken on purpose must fail the build in
    # hooks/captures.py with its own message, not here.
    path = Path(__file__).resolve().parent.parent / "spike" / "bench" / "report.py"
    spec = importlib.util.spec_from_file_location("spike_bench_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


_report = _load_report()
COLUMNS = _report.COLUMNS
markdown_cell = _report.markdown_cell
markdown_ratio = _report.markdown_ratio

log = logging.getLogger("mkdocs.hooks.benchmark")

PAGE = "spike/benchmark.md"
RESULTS = "data/benchmark.json"  # relative to docs_dir

_TOKEN = re.compile(r"\{\{bench (\w+) (\w+) (\w+)\}\}")
# A marker sits alone on its line; its indentation (inside an admonition, say) is kept.
_MARKER = re.compile(r"^([ \t]*)<!-- benchmark:([\w-]+) -->[ \t]*$", re.MULTILINE)

TESTS = tuple(COLUMNS)
ROLE_COLOURS = {"spike": "#d84315", "floor": "#616161", "reference": "#1565c0"}
ROLE_NAMES = {"spike": "the spike", "floor": "floor", "reference": "alternative"}


# ---------------------------------------------------------------- MkDocs event


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    """Fills the benchmark page's markers from the saved results."""
    if page.file.src_uri != PAGE:
        return markdown
    path = Path(config["docs_dir"]) / RESULTS
    return render_page(markdown, load_results(path))


# ---------------------------------------------------------------- loading


def load_results(path: Path) -> dict:
    """Reads and sanity-checks a results file written by ``spike.bench``."""
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PluginError(
            f"benchmark hook: {path} is missing; run `uv run python -m spike.bench --json {path}`"
        ) from exc
    except (OSError, ValueError) as exc:
        raise PluginError(f"benchmark hook: cannot read {path}: {exc}") from exc
    for key in ("schema", "date", "message", "machine", "settings", "tests", "targets"):
        if key not in results:
            raise PluginError(
                f"benchmark hook: {path} has no '{key}'; rerun the benchmark to rewrite it"
            )
    if results["schema"] != 1:
        raise PluginError(
            f"benchmark hook: {path} has schema {results['schema']}, this hook reads schema 1"
        )
    return results


# ---------------------------------------------------------------- page


def render_page(markdown: str, results: dict) -> str:
    """The page with every marker and token replaced; unknown markers are errors."""
    renderers: dict[str, Callable[[dict], str]] = {
        "machine": render_machine,
        "message": render_message,
        "tables": render_tables,
        **{f"table-{test}": functools.partial(render_tables, only=test) for test in TESTS},
        "chart": render_round_trip_chart,
        "conn-chart": render_connections_chart,
        "log-cost": render_log_cost,
        "targets": render_targets,
        "notes": render_notes,
    }

    def marker(match: re.Match) -> str:
        indent, name = match.groups()
        if name not in renderers:
            raise PluginError(
                f"benchmark hook: unknown marker <!-- benchmark:{name} --> in {PAGE}"
            )
        return "\n".join(
            indent + line if line else line for line in renderers[name](results).splitlines()
        )

    def token(match: re.Match) -> str:
        return format_value(results, *match.groups())

    return _TOKEN.sub(token, _MARKER.sub(marker, markdown))


def _row(results: dict, test: str, row_id: str) -> dict | None:
    for row in results["tests"].get(test, {}).get("rows", []):
        if row.get("id") == row_id:
            return row
    return None


def format_value(results: dict, test: str, row_id: str, field: str) -> str:
    """One measured value, formatted for prose; ``n/a`` when this run lacks it."""
    row = _row(results, test, row_id)
    value = None if row is None or "failure" in row else row.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        log.warning(
            "benchmark hook: no value for %s/%s/%s in the results; showing n/a",
            test,
            row_id,
            field,
        )
        return "n/a"
    return _format(field, value)


def _format(field: str, value: float) -> str:
    if field.startswith("vs_"):
        return f"{value:.2f}×"
    if field.endswith("_us"):
        return f"{value:,.1f} µs"
    if field.endswith("_ms"):
        return f"{value:,.1f} ms"
    if field == "mib_per_s":
        return f"{value:,.0f} MiB/s"
    if field.endswith("_per_s"):
        return f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def _date(results: dict) -> str:
    try:
        when = _dt.datetime.fromisoformat(results["date"].replace("Z", "+00:00"))
    except ValueError:
        return results["date"]
    return when.strftime("%d %B %Y, %H:%M UTC").lstrip("0")


def render_machine(results: dict) -> str:
    """A definition-style list: when, where and how the run was made."""
    m, s = results["machine"], results["settings"]
    lines = [
        f"- **Run:** {_date(results)}, `{results.get('command', 'python -m spike.bench')}` "
        f"({results.get('mode', 'full')} mode)",
        f"- **Machine:** {m.get('cpu_count')} CPUs ({html.escape(str(m.get('cpu_model')))}), "
        f"{html.escape(str(m.get('os')))}",
        f"- **Python:** {m.get('python')}; **pinning:** {m.get('pinning')}"
        + (f"; **the pipe's JSON:** {m['json_codec']}" if m.get("json_codec") else ""),
    ]
    if m.get("load_average_after"):
        one, five, fifteen = m["load_average_after"]
        before = ""
        if m.get("load_average_before"):
            before = "{}, {}, {} before it; ".format(*m["load_average_before"])
        lines.append(
            f"- **Load average** (1, 5, 15 min): {before}{one}, {five}, {fifteen} just after "
            "it (the benchmark's own work included; other programs running at the same time "
            "add noise)"
        )
    extras = []
    if m.get("c_compiler"):
        extras.append(f"C compiler {html.escape(m['c_compiler'])} (`-O2`)")
    if m.get("pyzmq"):
        extras.append(f"pyzmq {m['pyzmq']} (libzmq {m.get('libzmq')})")
    if extras:
        lines.append("- **Tools:** " + "; ".join(extras))
    lines.append(
        f"- **Work per round:** {s['requests']:,} round trips per row after {s['warmup']} "
        "untimed ones; "
        f"{s['pipeline']:,} pipelined messages; {s['connections']:,} connections × "
        f"{s['conn_requests']} round trips; "
        f"one {s['big_mib']:g} MiB message (median of 5 per round)"
        + (
            f"; ops that wait: 32 connections × 15 calls of 20 ms, "
            f"{s['wait_connections']:,} clients × one of 100 ms (connecting timed; again on "
            "connections already open)"
            if "wait_connections" in s
            else ""
        )
        + f". **Rounds:** {s['rounds']} (every figure is the median over rounds)."
    )
    return "\n".join(lines)


def _table(header: list[str], align: list[str], rows: list[list[str]]) -> str:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _label(row: dict) -> str:
    text = html.escape(row["label"])
    return f"**{text}**" if row.get("role") == "spike" else text


def render_tables(results: dict, only: str | None = None) -> str:
    """Markdown tables, one per test (or only ``only``), with ratios to the run's floors.

    The columns are ``spike.bench.report.COLUMNS``, the ones the terminal table shows.
    """
    tests = results["tests"]
    settings = results["settings"]
    planned = settings["connections"] * settings["conn_requests"] * settings["rounds"]
    parts: list[str] = []
    for test, columns in COLUMNS.items():
        if test not in tests or only not in (None, test):
            continue
        rows = []
        for row in tests[test]["rows"]:
            if "failure" in row:
                rows.append(
                    [_label(row), "failed: " + html.escape(row["failure"])]
                    + ["–"] * (len(columns) - 1)
                )
            else:
                rows.append([_label(row), *(markdown_cell(c, row, planned) for c in columns)])
        header = ["Server", *(column.markdown for column in columns)]
        title = "" if only else f"**{html.escape(tests[test]['title'])}**\n\n"
        parts.append(title + _table(header, ["l"] + ["r"] * len(columns), rows))
    if only and not parts:
        return f"*This test was not part of the run ({results.get('command', '')}).*"
    return "\n\n".join(parts)


# (what, test, default row, --quiet row, field, how to show it)
LOG_COST_ROWS = (
    ("Plain-text round trip, p50", "round_trip", "spike_text", "spike_quiet_text", "p50_us"),
    ("JSON echo round trip, p50", "round_trip", "spike_json", "spike_quiet_json", "p50_us"),
    ("Pipelined messages/s", "pipelined", "spike", "spike_quiet", "messages_per_s"),
    ("Many connections, requests/s", "connections", "spike", "spike_quiet", "requests_per_s"),
)


def render_log_cost(results: dict) -> str:
    """The default server (logging every message) beside the same server ``--quiet``."""
    rows = []
    for what, test, default_id, quiet_id, field in LOG_COST_ROWS:
        default, quiet = _row(results, test, default_id), _row(results, test, quiet_id)
        if not default or not quiet or field not in default or field not in quiet:
            rows.append([what, "–", "–", "not measured"])
            continue
        ratio = default.get("vs_quiet")
        rows.append(
            [
                what,
                _format(field, default[field]),
                _format(field, quiet[field]),
                markdown_ratio(ratio),
            ]
        )
    return _table(
        ["Measure", "Default (logging)", "`--quiet`", "Default ÷ quiet"],
        ["l", "r", "r", "r"],
        rows,
    )


def render_targets(results: dict) -> str:
    """The spike's targets with the measured value and a plain met/missed verdict."""
    rows = []
    for target in results["targets"]:
        if "value" not in target:
            rows.append([html.escape(target["name"]), "–", "–", "not measured"])
            continue
        value = target["value"]
        shown = (
            "–" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
        )
        verdict = {True: "**met**", False: "**missed**", None: "not measured"}[target["met"]]
        compare = {"<=": "≤", ">=": "≥"}.get(target["compare"], target["compare"])
        rows.append(
            [
                html.escape(target["name"]),
                f"{html.escape(target['measure'])} = {shown}",
                f"{compare} {target['limit']}",
                verdict,
            ]
        )
    return _table(["Target", "Measured", "Goal", "Result"], ["l", "l", "l", "l"], rows)


def render_message(results: dict) -> str:
    """The sentence that names the message the run sent (never retyped by hand)."""
    message = str(results["message"])
    return (
        f"Each row sends the same {len(message)}-character message, `{message}`; every\n"
        "server runs as its own process."
    )


def render_notes(results: dict) -> str:
    """What this run skipped or could not measure; a sentence when nothing was."""
    notes = results.get("notes") or []
    if not notes:
        return "Nothing was skipped in this run: every row above was measured."
    return "\n".join(f"- {html.escape(note)}" for note in notes)


# ---------------------------------------------------------------- charts


def bar_chart_svg(title: str, bars: list[tuple[str, float, str, str]], note: str) -> str:
    """A horizontal bar chart as inline SVG: one bar per (label, value, role, value text).

    Plain SVG with fixed colours and ``currentColor`` text: no script, so it
    shows the same in the browser, in dark mode and in a printed PDF.
    """
    bar_h, gap, right, top = 22, 8, 110, 34
    # Room for the longest label at about 7.5 px per character of 13 px text.
    left = max(120, int(7.5 * max((len(label) for label, *_ in bars), default=10)) + 16)
    width = left + 480 + right
    plot = width - left - right
    height = top + len(bars) * (bar_h + gap) + 40
    biggest = max((value for _, value, _, _ in bars), default=1.0) or 1.0
    parts = [
        f'<svg class="bench-chart" role="img" aria-label="{html.escape(title)}" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'style="max-width:100%;height:auto" '
        'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="13">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="0" y="18" font-weight="bold" fill="currentColor">{html.escape(title)}</text>',
    ]
    for index, (label, value, role, shown) in enumerate(bars):
        y = top + index * (bar_h + gap)
        length = max(1.0, plot * value / biggest)
        colour = ROLE_COLOURS.get(role, ROLE_COLOURS["reference"])
        weight = ' font-weight="bold"' if role == "spike" else ""
        parts.append(
            f'<text x="{left - 8}" y="{y + bar_h * 0.7:.1f}" text-anchor="end" '
            f'fill="currentColor"{weight}>{html.escape(label)}</text>'
            f'<rect x="{left}" y="{y}" width="{length:.1f}" height="{bar_h}" fill="{colour}"/>'
            f'<text x="{left + length + 6:.1f}" y="{y + bar_h * 0.7:.1f}" '
            f'fill="currentColor">{html.escape(shown)}</text>'
        )
    legend_y = top + len(bars) * (bar_h + gap) + 16
    x = left
    for role in ("spike", "floor", "reference"):
        parts.append(
            f'<rect x="{x}" y="{legend_y - 11}" width="12" height="12" '
            f'fill="{ROLE_COLOURS[role]}"/>'
            f'<text x="{x + 17}" y="{legend_y}" fill="currentColor">{ROLE_NAMES[role]}</text>'
        )
        x += 120
    parts.append(
        f'<text x="0" y="{legend_y + 20}" font-size="11" '
        f'fill="currentColor">{html.escape(note)}</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _figure(svg: str, caption: str) -> str:
    # One line of raw HTML: Markdown leaves a block-level element alone.
    return f'<figure class="bench-figure">{svg}<figcaption>{caption}</figcaption></figure>'


def render_round_trip_chart(results: dict) -> str:
    """Median round trip of every row, shortest to longest."""
    rows = [r for r in results["tests"].get("round_trip", {}).get("rows", []) if "p50_us" in r]
    rows.sort(key=lambda r: r["p50_us"])
    bars = [(r["label"], r["p50_us"], r["role"], f"{r['p50_us']:.1f} µs") for r in rows]
    svg = bar_chart_svg(
        "Round trip on one connection, median (shorter is better)",
        bars,
        "Microseconds per request; one client, one connection, loopback.",
    )
    return _figure(svg, "Median round-trip time per request, measured in the run described above.")


def render_connections_chart(results: dict) -> str:
    """Requests per second with many connections open at once."""
    rows = [
        r for r in results["tests"].get("connections", {}).get("rows", []) if "requests_per_s" in r
    ]
    s = results["settings"]
    bars = [
        (r["label"], r["requests_per_s"], r["role"], f"{r['requests_per_s']:,.0f}/s") for r in rows
    ]
    svg = bar_chart_svg(
        f"{s['connections']:,} connections × {s['conn_requests']} round trips (longer is better)",
        bars,
        "Requests answered per second, all connections at once, median over rounds.",
    )
    return _figure(svg, "Throughput with many clients connected at the same time.")
