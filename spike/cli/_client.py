"""``spike-client``: send messages to a server and show each reply."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import itertools
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .._args import (
    TOKEN_VARIABLE,
    Parser,
    host,
    port,
    seconds,
    token,
    token_from_environment,
    utf8_text,
)
from .._display import escape_controls, shorten
from ..client import DEFAULT_TIMEOUT, MAX_TIMEOUT, Client, check_reply, request_id_of
from ..errors import NO_ID, PipeError, ProtocolError, Unauthorized, first_line
from ..protocol import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    NonFiniteNumber,
    decode_json,
    encode_request,
    format_address,
)
from ._output import emit, prepare_output

__all__ = ["client_main"]


def _client_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="spike-client",
        description=(
            "Send messages to a spike-server and print each reply. The words of the "
            "message are joined by spaces, as echo joins them: spike-client A message "
            "from CS361 sends one message, quoted or not. Several messages: -m TEXT for "
            "each, or one per line on standard input (with no message and no --op, "
            "lines are read from there, as UTF-8). A message that starts with { is sent "
            'as a JSON request (e.g. \'{"op": "info"}\'); anything else is plain '
            "text, which the pipe echoes. Control characters in what is shown (escape "
            "sequences, a bare carriage return, line separators) are escaped, as \\x1b, "
            "so a reply cannot drive the terminal; --raw prints replies as they are."
        ),
        epilog=(
            "Exit status: 0 all replies ok; 1 no server, a timeout, an error reply, a "
            "reply that is not the pipe's (a web server, plain text that is not echoed, "
            "a reply to a JSON request that is not a valid reply to it), or an input "
            "line that is not UTF-8 (skipped); 2 bad arguments."
        ),
    )
    parser.add_argument(
        "words",
        nargs="*",
        type=utf8_text,
        metavar="WORD",
        help="the message, its words joined by spaces into one line",
    )
    parser.add_argument(
        "-m",
        "--message",
        dest="each",
        action="append",
        type=utf8_text,
        default=[],
        metavar="TEXT",
        help="one message (repeatable: -m one -m two sends two); not with WORDs",
    )
    parser.add_argument(
        "--host",
        type=host,
        default=DEFAULT_HOST,
        help="server address: a name, an IPv4 address, or an IPv6 address with or "
        "without brackets (default %(default)s)",
    )
    parser.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help="server port (default %(default)s)"
    )
    parser.add_argument(
        "--token",
        type=token,
        metavar="T",
        help="the server's token, for a server that needs one (its owner has it: "
        f"spike-server prints it at start) (default: ${TOKEN_VARIABLE} if set)",
    )
    parser.add_argument(
        "--timeout",
        type=seconds(allow_zero=False, at_most=MAX_TIMEOUT),
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="deadline in seconds for connecting, and for each message: sending it "
        "and receiving its complete reply, however slowly the server sends it "
        f"(default %(default)s, at most {MAX_TIMEOUT:g})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='send each message as a JSON echo request {"op": "echo", "text": ...} '
        "(one that already starts with { is sent as it is)",
    )
    parser.add_argument(
        "--op",
        type=utf8_text,
        metavar="NAME",
        help="send the JSON request NAME first (try: info, stats, echo)",
    )
    parser.add_argument(
        "--raw",
        action="store_true",
        help="for scripts: print only the replies, each exactly as received (its bytes, "
        "nothing escaped), one per line, without Sent:/Received:",
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


def _param(text: str) -> tuple[str, Any]:
    pair = utf8_text(text)
    key, sep, value = pair.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"needs KEY=VALUE, not {shorten(pair)}")
    if key in ("op", "id"):
        raise argparse.ArgumentTypeError(f"cannot set {key!r}: the client writes it")
    try:
        return key, decode_json(value.encode())
    except NonFiniteNumber as exc:
        raise argparse.ArgumentTypeError(
            f"{shorten(pair)}: {exc.text} is not a number JSON can carry; to send it as text, "
            f'make VALUE a JSON string ("{exc.text}" with the quotes)'
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
    if args.token is None:
        try:
            args.token = token_from_environment()
        except ValueError as exc:
            parser.error(str(exc))
    if args.param and args.op is None:
        parser.error("argument --param: only used with --op NAME")
    if args.words and args.each:
        parser.error(
            "argument -m/--message: give the message as words or with -m, not both "
            "(-m once for each message)"
        )
    # Unquoted words are one message, as `echo` joins them: the shell split them.
    args.messages = [" ".join(args.words)] if args.words else args.each
    args.op_line = None
    if args.op is not None:
        try:
            args.op_line = encode_request(args.op, dict(args.param), 1).decode().rstrip("\n")
        except (TypeError, ValueError, RecursionError) as exc:
            parser.error(f"argument --param: cannot be sent as JSON ({first_line(exc)})")
    return args


def _message_lines(args: argparse.Namespace) -> list[str]:
    """Each line of each message: on the wire a newline ends a message."""
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


def _input_not_utf8(number: int, raw: bytes, position: int) -> _BadInput:
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
            return _input_not_utf8(number, raw, exc.start)
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
                yield _input_not_utf8(number, exc.object, exc.start)
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
            yield _input_not_utf8(number, raw, exc.start)
            continue
        yield line


def client_main(argv: Sequence[str] | None = None) -> int:
    """``spike-client``: send messages, print ``Sent:``/``Received:`` pairs."""
    prepare_output()
    args = _parse_client_args(argv)
    try:
        return _run_client(args)
    except KeyboardInterrupt:
        emit("", sys.stderr)
        return 130
    except Unauthorized as exc:  # one line: what to ask for, and where to put it
        how = "" if args.token else f", then pass it with --token T (or set {TOKEN_VARIABLE})"
        emit(f"spike-client: {exc.message}{how}", sys.stderr)
        return 1
    except PipeError as exc:
        emit(f"spike-client: {exc}", sys.stderr)
        return 1


def _run_client(args: argparse.Namespace) -> int:
    status = 0
    next_id = 1
    where = format_address((args.host, args.port))
    with Client(args.host, args.port, args.timeout, token=args.token) as client:
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
                emit(
                    f"Connected to {where}. Type a message and press Enter; Ctrl+D "
                    "(Ctrl+Z then Enter on Windows) quits.",
                    sys.stderr,
                )
            messages = _stdin_lines(interactive)
        for typed in itertools.chain(wire_lines, messages):
            if isinstance(typed, _BadInput):
                emit(f"spike-client: {typed.reason}", sys.stderr)
                status = 1
                continue
            line = typed
            if args.json and not typed.startswith("{"):
                line = encode_request("echo", {"text": typed}, next_id).decode().rstrip("\n")
                next_id += 1
            if not args.raw:
                emit(f"Sent: {escape_controls(line)}")
            raw = client.exchange(line)
            if args.raw:
                _write_raw(raw)
            else:
                emit(f"Received: {escape_controls(raw.decode(errors='replace'))}")
            # A reply that is not the pipe's (a web server, a reply out of step)
            # ends the session: no later reply on this connection could be trusted.
            if not _is_ok_reply(line, raw, where, args.port):
                status = 1
    return status


def _write_raw(reply: bytes) -> None:
    """The reply's bytes and a newline, on standard output as they came."""
    stdout = sys.stdout
    buffer = getattr(stdout, "buffer", None)
    if buffer is None:  # a text stream put in place of stdout (an IDE, a test)
        emit(reply.decode(errors="replace"))
        return
    with contextlib.suppress(OSError, ValueError):
        stdout.flush()
        buffer.write(reply + b"\n")
        buffer.flush()


def _is_ok_reply(line: str, raw: bytes, where: str, port: int) -> bool:
    """Judge ``raw``, the reply to ``line`` from ``where``: True for an ok
    reply, False for the pipe's error reply. Raises :class:`PipeError`, naming
    what answered, for a reply that is not the pipe's protocol.

    A JSON request must get a reply with its id. Plain text must come back
    as it was sent (the pipe's echo rule), or as an error reply (a line too
    long), which carries no id.
    """
    # The server reads a "\r" just before the newline as part of the line end.
    if not line.startswith("{") and raw == line.encode().removesuffix(b"\r"):
        return True
    if _WEB_REPLY.match(raw):
        hint = (
            f"another program has port {port}: start spike-server with another --port, "
            "and give this one the same"
            if port == DEFAULT_PORT
            else f"is that the docs server? the pipe listens on {DEFAULT_PORT} by default"
        )
        raise PipeError(f"{where} answered like a web server (HTTP), not the pipe: {hint}")
    if line.startswith("{"):
        return bool(check_reply(raw, request_id_of(line), where)["ok"])
    try:
        if not check_reply(raw, NO_ID, where)["ok"]:
            return False
    except ProtocolError:
        pass  # not a pipe reply at all: said below
    raise PipeError(
        f"{where} answered {shorten(raw)} to plain text, which the pipe echoes: "
        "is that a pipe server?"
    )


# An HTTP status line, or an HTML page: Python's http.server (behind
# `mkdocs serve`) answers a line that is no HTTP request with an error page
# and, taking it for HTTP/0.9, no status line.
_WEB_REPLY = re.compile(rb"HTTP/\d(?:\.\d)? \d{3}\b|\s*<(?:!doctype\s+html|html)\b", re.IGNORECASE)
