"""``python -m spike.bench``: the command line, the printed summary and the exit status.

Exit status 0 when the spike was measured, 1 when a server could not be set
up, the results could not be saved or the spike itself failed, 2 for a bad
flag, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from spike._args import Parser, amount, non_negative_int, positive_int
from spike.bench.plan import FULL, QUICK, Sizes
from spike.bench.procs import BenchSetupError
from spike.bench.report import format_table
from spike.bench.runner import command_line, run, write_json


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m spike.bench``."""
    parser = Parser(
        prog="python -m spike.bench",
        description=(
            "Measure the spike against a C floor, a Python floor, HTTP and ZeroMQ on this machine."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also save the results to FILE as JSON"
    )
    parser.add_argument(
        "--cpu",
        type=non_negative_int,
        default=0,
        help="CPU to pin client and servers to on Linux (default 0)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to a CPU")
    parser.add_argument(
        "--no-c", action="store_true", help="skip the C floors even when a compiler exists"
    )
    sizes = parser.add_argument_group("sizes (override the --quick or full defaults)")
    sizes.add_argument(
        "--rounds", type=positive_int, help="interleaved rounds; figures are medians over them"
    )
    sizes.add_argument("--requests", type=positive_int, help="round trips per case per round")
    sizes.add_argument(
        "--warmup", type=non_negative_int, help="untimed round trips before each timed batch"
    )
    sizes.add_argument("--pipeline", type=positive_int, help="messages per pipelined batch")
    sizes.add_argument("--connections", type=positive_int, help="concurrent connections")
    sizes.add_argument(
        "--conn-requests", type=positive_int, help="round trips per concurrent connection"
    )
    sizes.add_argument("--big-mib", type=amount("MiB"), help="size of the big message in MiB")
    sizes.add_argument(
        "--wait-connections",
        type=positive_int,
        help="clients that each connect and call the async op that waits 100 ms, all at once "
        "(timed from the first connect; again on connections opened beforehand)",
    )
    return parser


def _sizes(args: argparse.Namespace) -> Sizes:
    base = dataclasses.replace(QUICK if args.quick else FULL)
    for field in dataclasses.fields(Sizes):
        value = getattr(args, field.name, None)
        if value is not None:
            setattr(base, field.name, value)
    return base


def _print_summary(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(f"spike.bench ({results['mode']}) {results['date']}")
    print(
        f"machine: {machine['cpu_count']} CPUs, {machine['cpu_model']}; {machine['os']}; "
        f"{machine['python']}; {machine['pinning']}; the pipe's JSON: {machine['json_codec']}"
    )
    if machine.get("load_average_after"):
        print(
            f"load average (1, 5, 15 min): {machine.get('load_average_before')} before, "
            f"{machine['load_average_after']} after (other programs running add noise)"
        )
    print(format_table(results))
    for note in results["notes"]:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m spike.bench``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    sizes = _sizes(args)
    try:
        results = run(
            sizes,
            cpu=None if args.no_pin else args.cpu,
            use_c=not args.no_c,
            mode="quick" if args.quick else "full",
            command=command_line(argv),
        )
    except BenchSetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbenchmark interrupted; servers stopped", file=sys.stderr)
        return 130
    _print_summary(results)
    if args.json:
        try:
            write_json(args.json, results)
        except OSError as exc:
            print(f"error: cannot write {args.json}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"results saved to {args.json}")
    print(
        f"Rerun this with: {command_line(argv)}  |  full run for the report page: "
        "uv run python -m spike.bench --json docs/data/benchmark.json  |  a short check: --quick"
    )
    spike_failed = [
        row
        for t in results["tests"].values()
        for row in t["rows"]
        if row["role"] == "spike" and "failure" in row
    ]
    if spike_failed:
        print(
            f"error: the spike itself could not be measured: {spike_failed[0]['failure']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
