"""Command-line front ends: ``spike-server``, ``spike-client``, ``python -m spike``.

This is the only module that prints. It turns the library's exceptions into
one readable line on stderr and an exit status: 0 success, 1 a runtime
problem (port in use, no server, timeout, an error reply), 2 a usage mistake
(bad flag or value).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import ipaddress
import itertools
import json
import math
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn, TextIO

from ._display import shorten
from ._limits import raise_open_file_limit
from ._logwriter import LogWriter, dropped_line
from .client import (
    DEFAULT_TIMEOUT,
    MAX_TIMEOUT,
    Client,
    check_reply,
    request_id_of,
)
from .errors import PipeError
from .ops import default_ops
from .protocol import (
    DEFAULT_HOST,
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_PORT,
    encode_request,
    format_address,
)
from .server import (
    DEFAULT_FLUSH_AFTER,
    DEFAULT_MAX_BUFFERED_BYTES,
    Server,
    running_server,
)

__all__ = ["SERVING_LINE", "client_main", "demo_main", "server_main", "serving_port"]

#: The first line ``spike-server`` prints (the benchmark's reference servers
#: print it too); whoever starts a server with ``--port 0`` reads the port here.
SERVING_LINE = re.compile(r"^Serving on (?P<host>\[[^\]]+\]|[^\s:]+):(?P<port>\d+)")


def serving_port(line: str) -> tuple[str, int] | None:
    """``(host, port)`` from a server's "Serving on HOST:PORT" line, or None."""
    match = SERVING_LINE.match(line)
    if match is None:
        return None
    return match["host"].strip("[]"), int(match["port"])


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


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(allow_zero: bool, at_most: float = math.inf) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
        if math.isnan(value):
            raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
        if value < 0 or (value == 0 and not allow_zero):
            limit = "0 or more" if allow_zero else "more than 0"
            raise argparse.ArgumentTypeError(f"seconds must be {limit}, not {text}")
        if value > at_most:
            raise argparse.ArgumentTypeError(f"seconds must be at most {at_most:g}, not {text}")
        if math.isinf(value):
            raise argparse.ArgumentTypeError(f"seconds must be a finite number, not {text}")
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
        type=positive_int,
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
        "--max-buffered-bytes",
        type=positive_int,
        default=DEFAULT_MAX_BUFFERED_BYTES,
        metavar="N",
        help="most unfinished input held for all clients together, in bytes; past it "
        "the clients holding the most get an 'overloaded' error reply and are "
        "disconnected (default %(default)s, 256 MiB)",
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
    _prepare_stdout()
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


def _serve(args: argparse.Namespace, out: LogWriter, err: LogWriter) -> int:
    raise_open_file_limit(65536)
    try:
        server = Server(
            args.host,
            args.port,
            max_line_bytes=args.max_line_bytes,
            idle_timeout=args.idle_timeout,
            flush_after=args.flush_after,
            max_buffered_bytes=args.max_buffered_bytes,
            log=None if args.quiet else out,
            error_log=err if args.quiet else None,  # None: errors go to log
            op_tracebacks=args.tracebacks,
        )
    except PipeError as exc:
        err(f"spike-server: {exc}")
        return 1
    try:
        out(f"Serving on {format_address(server.address)} (press Ctrl+C to stop)")
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    out("Server stopped.")
    return 0


def _close_logs(out: LogWriter, err: LogWriter) -> None:
    """Write out what the server logged, without waiting on an output nobody reads.

    If standard output lost lines that it never got to report (it is still
    not being read), standard error says so, when it can.
    """
    try:
        if not out.close() and out.dropped:
            err(f"spike-server: {dropped_line(out.dropped)}")
        err.close()
    except KeyboardInterrupt:  # a second Ctrl+C: stop waiting at once
        pass


# --- spike-client -------------------------------------------------------------
def _client_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spike-client",
        description=(
            "Send messages to a spike-server and print each reply. A MESSAGE that "
            'starts with { is sent as a JSON request (e.g. \'{"op": "info"}\'); '
            "anything else is plain text, which the server echoes. With no "
            "MESSAGE (and no --op), lines are read from standard input, as UTF-8."
        ),
        epilog=(
            "Exit status: 0 all replies ok; 1 no server, a timeout, an error reply, "
            "a reply to a JSON request that is not a valid reply to it, or an input "
            "line that is not UTF-8 (skipped); 2 bad arguments."
        ),
    )
    parser.add_argument(
        "messages",
        nargs="*",
        type=_utf8_text,
        metavar="MESSAGE",
        help="message(s) to send, one per reply",
    )
    parser.add_argument(
        "--host",
        type=_client_host,
        default=DEFAULT_HOST,
        help="server address: a name, an IPv4 address, or an IPv6 address with or "
        "without brackets (default %(default)s)",
    )
    parser.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="server port (default %(default)s)"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds(allow_zero=False, at_most=MAX_TIMEOUT),
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="deadline in seconds for connecting, and for each message: sending it "
        "and receiving its complete reply, however slowly the server sends it "
        f"(default %(default)s, at most {MAX_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='send each MESSAGE as a JSON echo request {"op": "echo", "text": MESSAGE} '
        "(one that already starts with { is sent as it is)",
    )
    parser.add_argument(
        "--op",
        type=_utf8_text,
        metavar="NAME",
        help="send the JSON request NAME first (try: info, stats, echo)",
    )
    parser.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="a parameter for --op (repeatable); VALUE is read as JSON when it "
        "parses, else as a string: --op echo --param text=hi. JSON has no NaN, "
        'Infinity or 1e999: to send those as text, quote them as JSON ("NaN")',
    )
    return parser


def _utf8_text(text: str) -> str:
    """An argument that can be sent: on POSIX, bytes that are not UTF-8 reach
    Python as lone surrogates ("surrogateescape"), which cannot be encoded."""
    try:
        text.encode()
    except UnicodeEncodeError:
        try:
            shown = shorten(text.encode(errors="surrogateescape"))
        except UnicodeEncodeError:  # a lone surrogate that was never a byte
            shown = shorten(text)
        raise argparse.ArgumentTypeError(f"{shown} is not valid UTF-8 text") from None
    return text


def _client_host(text: str) -> str:
    host = _utf8_text(text)
    if not host:
        raise argparse.ArgumentTypeError("empty; give a host name or IP address")
    shown = shorten(host)
    if host.startswith("["):
        inner, bracket, rest = host[1:].partition("]")
        port = rest[1:]
        if bracket and rest[:1] == ":" and port.isascii() and port.isdigit():
            raise argparse.ArgumentTypeError(
                f"{shown} includes a port: use --host {inner} --port {port}"
            )
        if not bracket or rest or not _is_ipv6(inner):
            raise argparse.ArgumentTypeError(
                f"{shown} is not a host: brackets go around an IPv6 address, as in [::1]"
            )
        return inner
    if ":" in host and not _is_ipv6(host):
        name, _, port = host.rpartition(":")
        if name and ":" not in name and port.isascii() and port.isdigit():
            raise argparse.ArgumentTypeError(
                f"{shown} includes a port: use --host {name} --port {port}"
            )
        raise argparse.ArgumentTypeError(f"{shown} is not a host name or IP address")
    try:
        # What socket.getaddrinfo() does to a name first; a name it cannot
        # encode ("a..b", a label over 63 characters) would fail there.
        host.encode("idna")
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown} is not a valid host name") from None
    return host


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


class _NotFinite(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(text)
    return value


# Python's json reads NaN, Infinity and 1e999, but JSON has no such values
# and the request could not be written (or would carry null instead).
_strict_json = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


def _param(text: str) -> tuple[str, Any]:
    pair = _utf8_text(text)
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"needs KEY=VALUE, not {shorten(pair)}")
    if key in ("op", "id"):
        raise argparse.ArgumentTypeError(f"cannot set {key!r}: the client writes it")
    try:
        return key, _strict_json(value)
    except _NotFinite as exc:
        raise argparse.ArgumentTypeError(
            f"{shorten(pair)}: {exc} is not a number JSON can carry; to send it as text, "
            f'make VALUE a JSON string ("{exc}" with the quotes)'
        ) from None
    except (ValueError, RecursionError):  # not JSON (or nested too deep): a string
        return key, value


def _parse_client_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse and check ``spike-client``'s arguments; a mistake exits with status 2.

    Everything that can be wrong with the arguments is found here, before a
    connection is made; ``op_line`` is the ``--op`` request, ready to send.
    """
    parser = _client_parser()
    args = parser.parse_intermixed_args(argv)
    if args.param and args.op is None:
        parser.error("argument --param: only used with --op NAME")
    args.op_line = None
    if args.op is not None:
        try:
            args.op_line = encode_request(args.op, dict(args.param), 1).decode().rstrip("\n")
        except (TypeError, ValueError, RecursionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            parser.error(f"argument --param: cannot be sent as JSON ({reason})")
    return args


def _message_lines(args: argparse.Namespace) -> list[str]:
    """Each line of each MESSAGE argument: on the wire a newline ends a message."""
    lines: list[str] = []
    for message in args.messages:
        parts = message.split("\n")
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # "text\n" is one message, not two
        lines.extend(part[:-1] if part.endswith("\r") else part for part in parts)
    return lines


class _BadInput:
    """An input line that cannot be sent; ``reason`` says why, for one line on stderr."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _not_utf8(number: int, raw: bytes, position: int) -> _BadInput:
    return _BadInput(
        f"input line {number} is not valid UTF-8 (byte 0x{raw[position]:02x} at position "
        f"{position}); not sent"
    )


def _checked_line(line: str, number: int) -> str | _BadInput:
    """``line`` if it can be sent. A stdin decoded with "surrogateescape" (a
    POSIX locale that is not UTF-8, or PYTHONIOENCODING) turns bytes that
    are not UTF-8 into lone surrogates instead of failing."""
    try:
        line.encode()
    except UnicodeEncodeError:
        raw = line.encode(errors="surrogateescape" if _escaped_only(line) else "replace")
        try:
            raw.decode()
        except UnicodeDecodeError as exc:
            return _not_utf8(number, raw, exc.start)
        return _BadInput(f"input line {number} is not valid Unicode text; not sent")
    return line


def _escaped_only(line: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in line)


def _stdin_lines(interactive: bool) -> Iterator[str | _BadInput]:
    """The lines of standard input, read as UTF-8 whatever the console's code
    page or locale: the protocol is UTF-8, and a file in another encoding
    must be reported, not sent as other characters."""
    if interactive:
        for number in itertools.count(1):
            try:
                line = input("> ")
            except EOFError:
                print(file=sys.stderr)
                return
            except UnicodeDecodeError as exc:  # a terminal that is not UTF-8
                yield _not_utf8(number, exc.object, exc.start)
                continue
            yield _checked_line(line, number)
    stdin = sys.stdin
    if stdin is None:  # pythonw, or a service: no standard input at all
        return
    buffer = getattr(stdin, "buffer", None)
    if buffer is None:  # a text stream put in place of stdin (an IDE, a test)
        for number, text in enumerate(stdin, 1):
            yield _checked_line(text.rstrip("\r\n"), number)
        return
    for number, read in enumerate(buffer, 1):
        raw = read.rstrip(b"\r\n")
        if number == 1 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8) :]  # Notepad's UTF-8 files start with one
        try:
            line = raw.decode()
        except UnicodeDecodeError as exc:
            yield _not_utf8(number, raw, exc.start)
            continue
        yield line


def _emit(line: str, stream: TextIO | None) -> None:
    """One line of the client's output. A character the console cannot show
    is escaped (see _prepare_stdout); an output that was closed (| head)
    leaves nothing to tell, and must not turn into a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=stream, flush=True)


def client_main(argv: Sequence[str] | None = None) -> int:
    """``spike-client``: send messages, print ``Sent:``/``Received:`` pairs."""
    _prepare_stdout()
    args = _parse_client_args(argv)
    try:
        return _run_client(args)
    except KeyboardInterrupt:
        _emit("", sys.stderr)
        return 130
    except PipeError as exc:
        _emit(f"spike-client: {exc}", sys.stderr)
        return 1


def _run_client(args: argparse.Namespace) -> int:
    status = 0
    next_id = 1
    where = format_address((args.host, args.port))
    with Client(args.host, args.port, args.timeout) as client:
        wire_lines: list[str] = []
        if args.op_line is not None:
            wire_lines.append(args.op_line)
            next_id += 1
        messages: Iterable[str | _BadInput]
        if args.messages:
            messages = _message_lines(args)
        elif args.op is not None:
            messages = []
        else:
            interactive = sys.stdin is not None and sys.stdin.isatty()
            if interactive:
                _emit(
                    f"Connected to {where}. Type a message and press Enter; Ctrl+D "
                    "(Ctrl+Z then Enter on Windows) quits.",
                    sys.stderr,
                )
            messages = _stdin_lines(interactive)
        for typed in itertools.chain(wire_lines, messages):
            if isinstance(typed, _BadInput):
                _emit(f"spike-client: {typed.reason}", sys.stderr)
                status = 1
                continue
            line = typed
            if args.json and not typed.startswith("{"):
                line = encode_request("echo", {"text": typed}, next_id).decode().rstrip("\n")
                next_id += 1
            _emit(f"Sent: {line}", sys.stdout)
            raw = client.exchange(line)
            _emit(f"Received: {raw.decode(errors='replace')}", sys.stdout)
            if line.startswith("{"):
                # A JSON request must get a protocol reply with its id. Anything
                # else (an HTTP server, a reply out of step) ends the session:
                # no later reply on this connection could be trusted.
                if not check_reply(raw, request_id_of(line), where)["ok"]:
                    status = 1
            elif _is_error_reply(raw):
                status = 1
    return status


def _is_error_reply(raw: bytes) -> bool:
    """True for the JSON error reply a server gives to plain text it refuses
    (line_too_long, bad_utf8); any other reply to plain text is its echo."""
    if not raw.startswith(b"{"):
        return False
    try:
        parsed = json.loads(raw.decode(errors="replace"))
    except (ValueError, RecursionError):
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
