"""Command-line front ends: ``spike-server``, ``spike-client``, ``python -m spike``.

This is the only module that prints. It turns the library's exceptions into
one readable line on stderr and an exit status: 0 success, 1 a runtime
problem (port in use, no server, timeout, an error reply), 2 a usage mistake
(bad flag or value).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

from .client import DEFAULT_TIMEOUT, Client
from .ops import default_ops
from .protocol import DEFAULT_MAX_LINE_BYTES, PipeError, encode_request, format_address
from .server import (
    DEFAULT_FLUSH_AFTER,
    DEFAULT_HOST,
    DEFAULT_PORT,
    Server,
    running_server,
)

__all__ = ["client_main", "demo_main", "server_main"]

DEMO_MESSAGE = "A message from CS361!"


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be from 0 to 65535, not {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(allow_zero: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if not value >= 0 or value == float("inf") or (value == 0 and not allow_zero):
            limit = "0 or more" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"seconds must be {limit}, not {text}")
        return value

    parse.__name__ = "seconds"
    return parse


def _prepare_stdout() -> None:
    """Line-buffered output (a parent reading a pipe sees each line at once)
    that never fails on characters the console cannot show."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True, errors="backslashreplace")


def _say(line: str) -> None:
    """Print one line; a closed stdout must not stop the server."""
    with contextlib.suppress(OSError, ValueError):
        print(line, flush=True)


def _say_error(line: str) -> None:
    """Print one line on stderr; a closed stderr must not stop the server."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def _fail(prog: str, message: str) -> int:
    print(f"{prog}: {message}", file=sys.stderr, flush=True)
    return 1


# --- spike-server -------------------------------------------------------------
def _server_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
        default=DEFAULT_HOST,
        help="address to listen on (default %(default)s: this computer only; "
        "0.0.0.0 for every network interface)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help="TCP port (default %(default)s; 0 picks a free one)",
    )
    parser.add_argument(
        "--max-line-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_LINE_BYTES,
        metavar="N",
        help="longest accepted message in bytes; a longer one gets an error "
        "reply and its connection is closed (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_seconds(allow_zero=False),
        default=None,
        metavar="S",
        help="close connections with no traffic either way for S seconds; the log "
        "says if an unfinished message was dropped (default: never)",
    )
    parser.add_argument(
        "--flush-after",
        type=_seconds(allow_zero=True),
        default=DEFAULT_FLUSH_AFTER,
        metavar="S",
        help="answer a message that has no newline once no more bytes arrive "
        "for S seconds, for clients that send without a newline and wait "
        "(default %(default)s; 0 waits for the newline)",
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


def _raise_open_file_limit(wanted: int = 65536) -> None:
    """Let the server hold thousands of connections: lift the soft limit on
    open files (often 1024 on Linux, 256 on macOS) toward the hard limit."""
    try:
        import resource  # noqa: PLC0415  (POSIX only)
    except ImportError:  # Windows: no such limit to lift
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    for value in (target, min(target, 10240)):  # macOS caps at OPEN_MAX
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
            return
        except (ValueError, OSError):
            continue


def server_main(argv: Sequence[str] | None = None) -> int:
    """``spike-server``: run a server in the foreground until Ctrl+C."""
    _prepare_stdout()
    args = _server_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        _stop_on_signals()
    try:
        return _serve(args)
    except KeyboardInterrupt:  # Ctrl+C while starting or cleaning up
        _say("Server stopped.")
        return 0


def _serve(args: argparse.Namespace) -> int:
    _raise_open_file_limit()
    try:
        server = Server(
            args.host,
            args.port,
            max_line_bytes=args.max_line_bytes,
            idle_timeout=args.idle_timeout,
            flush_after=args.flush_after,
            log=None if args.quiet else _say,
            error_log=_say_error if args.quiet else None,  # None: errors go to log
        )
    except PipeError as exc:
        return _fail("spike-server", str(exc))
    try:
        _say(f"Serving on {format_address(server.address)} (press Ctrl+C to stop)")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    _say("Server stopped.")
    return 0


# --- spike-client -------------------------------------------------------------
def _client_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spike-client",
        description=(
            "Send messages to a spike-server and print each reply. A MESSAGE that "
            'starts with { is sent as a JSON request (e.g. \'{"op": "info"}\'); '
            "anything else is plain text, which the server echoes. With no "
            "MESSAGE (and no --op), lines are read from standard input."
        ),
        epilog=(
            "Exit status: 0 all replies ok, 1 no server / timeout / an error "
            "reply, 2 bad arguments."
        ),
    )
    parser.add_argument(
        "messages", nargs="*", metavar="MESSAGE", help="message(s) to send, one per reply"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="server address (default %(default)s)"
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="server port (default %(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds(allow_zero=False),
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds to wait to connect and for each reply (default %(default)s)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='send each MESSAGE as a JSON echo request {"op": "echo", "text": MESSAGE} '
        "(one that already starts with { is sent as it is)",
    )
    parser.add_argument(
        "--op",
        metavar="NAME",
        help="send the JSON request NAME first (try: info, stats, echo)",
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter for --op (repeatable); VALUE is read as JSON when it "
        "parses, else as a string: --op echo --param text=hi",
    )
    return parser


def _parse_params(pairs: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"--param needs KEY=VALUE, not {pair!r}")
        if key in ("op", "id"):
            parser.error(f"--param cannot set {key!r}")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _message_lines(args: argparse.Namespace) -> list[str]:
    """Each line of each MESSAGE argument: on the wire a newline ends a message."""
    lines: list[str] = []
    for message in args.messages:
        parts = message.split("\n")
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # "text\n" is one message, not two
        lines.extend(part[:-1] if part.endswith("\r") else part for part in parts)
    return lines


def _stdin_lines(interactive: bool) -> Iterator[str]:
    if not interactive:
        for line in sys.stdin:
            yield line.rstrip("\r\n")
        return
    while True:
        try:
            yield input("> ")
        except EOFError:
            print(file=sys.stderr)
            return


def client_main(argv: Sequence[str] | None = None) -> int:
    """``spike-client``: send messages, print ``Sent:``/``Received:`` pairs."""
    _prepare_stdout()
    parser = _client_parser()
    args = parser.parse_intermixed_args(argv)
    if args.op is None and args.param:
        parser.error("--param needs --op")
    params = _parse_params(args.param, parser)
    try:
        return _run_client(args, params)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except PipeError as exc:
        return _fail("spike-client", str(exc))


def _run_client(args: argparse.Namespace, params: dict[str, Any]) -> int:
    status = 0
    next_id = 1
    with Client(args.host, args.port, args.timeout) as client:
        wire_lines: list[str] = []
        if args.op is not None:
            wire_lines.append(encode_request(args.op, params, next_id).decode().rstrip("\n"))
            next_id += 1
        messages: Iterable[str]
        if args.messages:
            messages = _message_lines(args)
        elif args.op is not None:
            messages = []
        else:
            interactive = sys.stdin.isatty()
            if interactive:
                print(
                    f"Connected to {format_address((args.host, args.port))}. Type a message and "
                    "press Enter; Ctrl+D (Ctrl+Z then Enter on Windows) quits.",
                    file=sys.stderr,
                )
            messages = _stdin_lines(interactive)
        for typed in itertools.chain(wire_lines, messages):
            line = typed
            if args.json and not typed.startswith("{"):
                line = encode_request("echo", {"text": typed}, next_id).decode().rstrip("\n")
                next_id += 1
            _say(f"Sent: {line}")
            reply = client.send_line(line)
            _say(f"Received: {reply}")
            if _is_error_reply(reply):
                status = 1
    return status


def _is_error_reply(reply: str) -> bool:
    if not reply.startswith("{"):
        return False
    try:
        parsed = json.loads(reply)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("ok") is False


# --- python -m spike ----------------------------------------------------------
class _DemoLog:
    """Prints the server's log lines with a prefix and lets the demo wait for one."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        _say(f"[server] {line}")
        with self._changed:
            self._lines.append(line)
            self._changed.notify_all()

    def wait_for(self, prefix: str, timeout: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: any(line.startswith(prefix) for line in self._lines), timeout
            )


def demo_main(argv: Sequence[str] | None = None) -> int:
    """``python -m spike``: a server and a client in one process, both logged."""
    _prepare_stdout()
    _Parser(
        prog="python -m spike",
        description=(
            "Demo of the CS361 pipe: starts a server on a free port in the "
            f"background, sends {DEMO_MESSAGE!r} from a client and prints both "
            "sides. Run spike-server and spike-client in two terminals for the real thing."
        ),
    ).parse_args(argv)
    log = _DemoLog()
    try:
        with running_server(port=0, log=log) as server:
            _say(f"[server] Serving on {format_address(server.address)}")
            with Client(*server.address) as client:
                log.wait_for("Connection opened:")
                _say(f"[client] Sent: {DEMO_MESSAGE}")
                reply = client.send_text(DEMO_MESSAGE)
                _say(f"[client] Received: {reply}")
            log.wait_for("Connection closed:")
        _say("[server] Server stopped.")
    except PipeError as exc:
        return _fail("python -m spike", str(exc))
    except KeyboardInterrupt:
        return 130
    return 0
