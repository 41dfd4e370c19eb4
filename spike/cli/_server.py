"""``spike-server``: run a server in the foreground until Ctrl+C."""

from __future__ import annotations

import argparse
import contextlib
import secrets
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence

from .._address import is_loopback, is_wildcard
from .._args import (
    TOKEN_VARIABLE,
    Parser,
    host,
    port,
    positive_int,
    seconds,
    token,
    token_from_environment,
)
from .._limits import raise_open_file_limit
from .._loader import load_ops
from .._logwriter import LogWriter, dropped_line
from ..errors import OpsLoadError, PipeError
from ..ops import OpRegistry, default_ops
from ..protocol import (
    DEFAULT_HOST,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_PORT,
    format_address,
)
from ..server import (
    DEFAULT_FLUSH_AFTER,
    DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_OP_TIMEOUT,
    DEFAULT_WORKERS,
    Server,
)
from ._output import prepare_output

__all__ = ["server_main"]


def _server_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spike-server",
        description=(
            "Serve the CS361 pipe: each line a client sends gets one reply line. "
            "Plain text is echoed; a line starting with { is a JSON request such as "
            f'{{"op": "info"}} (ops: {", ".join(default_ops.names())}).'
        ),
        epilog="Stop it with Ctrl+C.",
    )
    parser.add_argument(
        "--host",
        type=host,
        default=DEFAULT_HOST,
        help="address to listen on: a name, an IPv4 address, or an IPv6 address with "
        "or without brackets (default %(default)s: this computer only; 0.0.0.0 or :: "
        "for every network interface)",
    )
    parser.add_argument(
        "--port",
        type=port,
        default=DEFAULT_PORT,
        help="TCP port (default %(default)s; 0 picks a free one)",
    )
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token",
        type=token,
        metavar="T",
        help='every client must first send {"op": "auth", "token": T} (spike-client '
        "--token T) (default: none when --host is this computer only; else "
        f"${TOKEN_VARIABLE} if set, or a random token, printed at start)",
    )
    tokens.add_argument(
        "--no-token",
        action="store_true",
        help="no token even when other computers can connect: anyone who can reach "
        "this one can call every op you serve",
    )
    parser.add_argument(
        "--ops",
        metavar="MODULE:NAME",
        help="serve your own ops: the OpRegistry called NAME in a module (my_service:ops, "
        "imported from the current folder) or a file (path/to/my_service.py:ops) "
        "(default: the built-in echo, info and stats)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="threads that run plain `def` ops, so an op that waits (a database, a web "
        "API) keeps no one else waiting (default %(default)s; async def ops share one "
        "asyncio loop instead)",
    )
    parser.add_argument(
        "--op-timeout",
        type=seconds(allow_zero=True),
        default=DEFAULT_OP_TIMEOUT,
        metavar="S",
        help="an op that runs longer than S seconds gets an op_timeout error reply and "
        "its late result is dropped (default %(default)g; 0: no limit)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=positive_int,
        default=DEFAULT_MAX_IN_FLIGHT,
        metavar="N",
        help="requests of one client whose ops may run at once; past it that client is "
        "not read until replies come back (default %(default)s)",
    )
    parser.add_argument(
        "--max-line-bytes",
        type=positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        metavar="N",
        help="longest accepted message in bytes; a longer one gets an error "
        "reply and its connection is closed (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds(allow_zero=False),
        default=None,
        metavar="S",
        help="close connections with no traffic either way for S seconds; the log "
        "says if an unfinished message was dropped (default: never)",
    )
    parser.add_argument(
        "--flush-after",
        type=seconds(allow_zero=True),
        default=DEFAULT_FLUSH_AFTER,
        metavar="S",
        help="answer a message that has no newline once no more bytes arrive "
        "for S seconds, for clients that send without a newline and wait "
        "(default %(default)s; 0 waits for the newline)",
    )
    parser.add_argument(
        "--max-buffered-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BUFFERED_BYTES,
        metavar="N",
        help="most the server holds for all clients together, in bytes: unread input "
        "and unsent replies alike; past it the clients holding the most are "
        "disconnected, with an 'overloaded' error reply where one can still be sent "
        "(default %(default)s, 256 MiB)",
    )
    parser.add_argument(
        "--tracebacks",
        action="store_true",
        help="when an op raises, log its traceback under the error line (for debugging "
        "your own ops)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no per-connection or per-message log: print only the start and stop "
        "lines, and errors (on standard error)",
    )
    return parser


def _stop_on_signals() -> None:
    """Ctrl+C (and a polite SIGTERM, or Ctrl+Break on Windows) stop the
    server the same clean way.

    A shell starts background jobs with SIGINT ignored; this is a
    foreground tool, so Ctrl+C must work however it was started. On Windows
    a parent process can only signal a child through its own process group,
    and only with CTRL_BREAK_EVENT, which arrives as SIGBREAK.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.platform == "win32":
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    elif hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.default_int_handler)


def server_main(argv: Sequence[str] | None = None) -> int:
    """``spike-server``: run a server in the foreground until Ctrl+C."""
    prepare_output()
    args = _server_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        _stop_on_signals()
    # Every line the server prints goes through a writer thread: a terminal
    # or pipe that stops taking output must never stop the server.
    out = LogWriter(sys.stdout, name="spike-log")
    err = LogWriter(sys.stderr, name="spike-log-errors")
    try:
        status = _serve(args, out, err)
    except KeyboardInterrupt:  # Ctrl+C while starting or cleaning up
        out("Server stopped.")
        status = 0
    _close_logs(out, err)
    return status


def _load(args: argparse.Namespace, err: LogWriter) -> OpRegistry | None:
    """The ops to serve, or None after one line saying why they cannot be."""
    if args.ops is None:
        return default_ops
    try:
        return load_ops(args.ops)
    except OpsLoadError as exc:
        err(f"spike-server: {exc}")
        if args.tracebacks and exc.__cause__ is not None:
            cause = exc.__cause__
            for line in traceback.format_exception(type(cause), cause, cause.__traceback__):
                err(line.rstrip("\n"))
        return None


def _choose_token(args: argparse.Namespace) -> tuple[str | None, str]:
    """The token to require and where it came from ("--token", the
    variable's name, or "" for one made now); (None, "") for none.

    Beyond this computer a token is required unless ``--no-token`` says
    otherwise: ``--token``, else the variable, else a new one. On it, only
    ``--token`` sets one: a variable kept for a teammate's server must not
    change what a plain ``spike-server`` does."""
    if args.no_token:
        return None, ""
    if args.token is not None:
        return args.token, "--token"
    if is_loopback(args.host):
        return None, ""
    from_variable = token_from_environment()  # ValueError if it cannot be one
    if from_variable is not None:
        return from_variable, TOKEN_VARIABLE
    # 128 bits from the operating system's secure source; hex, so it survives
    # any shell, any chat window and argparse (no leading "-") unchanged.
    return secrets.token_hex(16), ""


def _serve(args: argparse.Namespace, out: LogWriter, err: LogWriter) -> int:
    try:
        token, token_from = _choose_token(args)
    except ValueError as exc:  # the variable holds what cannot be a token
        err(f"spike-server: {exc}")
        return 2
    ops = _load(args, err)
    if ops is None:
        return 2
    raise_open_file_limit(65536)
    try:
        server = Server(
            args.host,
            args.port,
            ops=ops,
            workers=args.workers,
            op_timeout=args.op_timeout or None,
            max_in_flight=args.max_in_flight,
            max_line_bytes=args.max_line_bytes,
            idle_timeout=args.idle_timeout,
            flush_after=args.flush_after,
            max_buffered_bytes=args.max_buffered_bytes,
            log=None if args.quiet else out,
            error_log=err if args.quiet else None,  # None: errors go to log
            op_tracebacks=args.tracebacks,
            token=token,
        )
    except PipeError as exc:
        err(f"spike-server: {exc}")
        return 1
    try:
        reach = _reach(server.address, token, token_from)
        served = f"ops from {args.ops}: {', '.join(ops.names())}; " if args.ops else ""
        out(f"Serving on {format_address(server.address)} ({served}{reach}press Ctrl+C to stop)")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    out("Server stopped.")
    return 0


def _reach(address: tuple[str, int], token: str | None, token_from: str) -> str:
    """What the start line says about who can connect, and with what token.

    A wildcard (``--host 0``, ``0.0.0.0``, ``::``) listens on every network
    interface. A token made now is printed in full, in the command a
    teammate runs; one the user gave is only named, so that it never lands
    in a saved log."""
    host, port = address
    wildcard = is_wildcard(host)
    where = "every network interface: " if wildcard else ""
    if token is not None and token_from:
        return f"{where}clients need the token from {token_from}; "
    if token is not None:
        teammate = _this_computer() if wildcard else host
        return (
            f"{where}a teammate connects with spike-client --host {teammate} --port {port} "
            f"--token {token}; "
        )
    if is_loopback(host):
        return ""
    return f"{where}no token (--no-token): anyone who can reach this computer can call every op; "


def _this_computer() -> str:
    """This computer's address as a teammate on its network would type it: a
    guess, the address of the interface that routes outward (connecting a
    UDP socket sends nothing); a placeholder when there is no such route."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1 (RFC 5737): never a real host
        address = str(probe.getsockname()[0])
        if address != "0.0.0.0":
            return address
    return "THIS-COMPUTERS-ADDRESS"


def _close_logs(out: LogWriter, err: LogWriter) -> None:
    """Write out what the server logged, without waiting on an output nobody reads.

    If standard output lost lines that it never got to report (it stalled
    or failed), standard error says so, and why, when it can.
    """
    try:
        if not out.close() and out.dropped:
            err(f"spike-server: {dropped_line(out.dropped, out.drop_reason)}")
        err.close()
    except KeyboardInterrupt:  # a second Ctrl+C: stop waiting at once
        pass
