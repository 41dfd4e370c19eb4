"""The pipe's client: a small blocking library on top of :mod:`spike.protocol`.

::

    from spike import Client

    with Client("127.0.0.1", 3000) as client:
        print(client.send_text("A message from CS361"))  # plain-text echo
        print(client.request("info"))                     # a JSON op

``timeout`` is a deadline, not an idle timer: connecting must finish
within it, and so must each exchange (sending a message and receiving its
complete reply line). A server that trickles a reply byte by byte cannot
stretch it.

Every reply must answer one request. A line that has arrived when no
request is waiting (a banner, an extra blank line after a reply) is a
:class:`~spike.errors.ProtocolError` naming the line, raised by the next
call, and the connection is closed, since the replies are out of step. A
JSON request's reply must also carry its ``id``, so there an unasked line
is caught whenever it arrives. Plain text has no ids: a stray line that
arrives only after the next message was sent cannot be told apart from its
reply (see :class:`Client`).

A server that listens beyond its own computer needs a token: pass
``token=`` (its owner has it: ``spike-server`` prints it at start), and the
client sends the ``auth`` line first, when it connects. A server without a
token accepts one too.

Every failure is a :class:`~spike.errors.PipeError`:
:class:`ConnectError` (nothing listening, unknown host),
:class:`PipeTimeout` (the deadline passed), :class:`ConnectionClosed` (the
server hung up), :class:`~spike.errors.ProtocolError` (a reply that breaks
the protocol) and :class:`~spike.errors.RemoteError` (an ``ok: false``
reply, with ``.code`` and ``.message``; :class:`~spike.errors.Unauthorized`
when the token is missing or wrong).

From a terminal use ``spike-client`` (or ``python -m spike.client``).
"""

from __future__ import annotations

import contextlib
import math
import socket
import time
from collections.abc import Iterator
from typing import Any, Literal

from .._address import is_wildcard, unbracket
from .._display import plural, shorten
from ..errors import (
    BAD_JSON,
    BAD_REQUEST,
    BAD_UTF8,
    NO_ID,
    UNAUTHORIZED,
    UNKNOWN_OP,
    ConnectError,
    ConnectionClosed,
    LineTooLong,
    PipeTimeout,
    ProtocolError,
    RemoteError,
    Unauthorized,
)
from ..protocol import (
    AUTH_OP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    LineFramer,
    Text,
    check_token,
    encode_request,
    format_address,
    parse_message,
)
from ..protocol import decode_reply as _decode_reply

__all__ = [
    "DEFAULT_MAX_REPLY_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "Client",
    "check_reply",
    "request_id_of",
]

DEFAULT_TIMEOUT = 5.0
#: The longest ``timeout`` accepted, in seconds (a day). Longer waits are a
#: typo, and past some point the operating system refuses them (a 1e308 s
#: timeout fails as "timestamp out of range"); ``None`` waits forever.
MAX_TIMEOUT = 86_400.0
# Longest single wait for reply bytes; the deadline is kept across waits.
_WAKE_EVERY = 0.25
# Replies can be longer than requests (JSON escaping), so the client accepts
# more than the server's default request limit.
DEFAULT_MAX_REPLY_BYTES = 16 * 1_048_576
# How a spike server's `unauthorized` reply starts (it never carries an id):
# a raw exchange that gets one raises Unauthorized, since the server has
# closed the connection.
_UNAUTHORIZED_REPLY = b'{"ok":false,"error":{"code":"unauthorized"'
_ASK = "ask its owner for the one it printed at start"


class Client:
    """A connection to a pipe server; send a message, get its reply.

    Connects in the constructor. ``timeout`` (seconds, at most
    :data:`MAX_TIMEOUT`; ``None`` waits forever) is a deadline: connecting
    must be done within it, and each exchange (sending one message and
    receiving its complete reply line) must be done within it, however
    slowly the server trickles its bytes. After a timeout the connection is
    closed, since a late reply would otherwise be taken for the next one.
    ``host`` may be an IPv6 address in brackets (``"[::1]"``). ``token``:
    sent in the ``auth`` line right after connecting, for a server that
    needs one (:class:`~spike.errors.Unauthorized` if it refuses it).

    Methods for the caller:
        ``send_text(text) -> str`` a plain-text message and its reply;
        ``request(op, **params) -> result`` a JSON request and its result;
        ``send_line(line) -> str`` one raw protocol line and the raw reply
        line; ``exchange(line) -> bytes`` the same with the reply's bytes;
        ``close()`` hang up (also on leaving a ``with`` block).
        Every failure raises a :class:`~spike.errors.PipeError` subclass
        whose message names ``host:port``, except
        :class:`~spike.errors.RemoteError`, which carries the server's own
        ``code`` and ``message``. A message that cannot be sent at all (a
        newline inside, text that is not valid Unicode) is a ``ValueError``.

    What it can tell about a server that breaks the one-reply-per-line rule:
        A JSON request's reply must repeat the request's ``id``
        (:meth:`request` adds one), so any other line in its place is a
        :class:`~spike.errors.ProtocolError`. A plain-text reply carries
        nothing to match it to its message: before sending, the client
        looks for anything that arrived since the last reply and refuses it
        (:meth:`send_text`, :meth:`send_line`, :meth:`exchange`), but a
        stray line the server sends after the message went out is returned
        as its reply. The real reply that follows is refused by the next
        call if it has arrived by then, and otherwise taken for that call's
        reply, one behind: use :meth:`request` where that matters. A reply
        cut off by the server closing the connection mid-line is a
        :class:`~spike.errors.ConnectionClosed` that says so.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        token: str | None = None,
    ) -> None:
        if token is not None:
            check_token(token)
        if timeout is not None and not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(
                f"timeout must be None or more than 0 and at most {MAX_TIMEOUT:g} seconds, "
                f"not {timeout!r}"
            )
        host = unbracket(host)
        self.host = host
        self.port = port
        self.timeout = timeout
        self._where = format_address((host, port))
        self._framer = LineFramer(max_reply_bytes)
        # Complete lines received beyond the one reply asked for; any left
        # when the next call starts were sent unasked.
        self._extra: list[bytes] = []
        self._next_id = 1
        self._send_failure: str | None = None  # why the last send broke off
        self._token_given = token is not None
        self._sock: socket.socket | None = None
        with self._map_os_errors("connect"):
            self._sock = socket.create_connection((host, port), timeout=timeout)
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if token is not None:
            self._authenticate(token)

    # -- public API ----------------------------------------------------------
    def send_line(self, line: str) -> str:
        """Send one raw protocol line (no newline inside); return the reply line.

        Bytes of the reply that are not valid UTF-8 come back as U+FFFD;
        :meth:`exchange` returns them as they arrived.
        """
        return self.exchange(line).decode(errors="replace")

    def exchange(self, line: str) -> bytes:
        """Send one raw protocol line; return the reply line's bytes (no newline).

        Sending and receiving the complete reply share one deadline,
        ``timeout`` seconds from the call.
        """
        data = _encode_line(line)
        self._check_nothing_unasked(look=True)
        deadline = self._deadline()
        self._send(data, deadline)
        raw = self._receive_line(deadline)
        if raw.startswith(_UNAUTHORIZED_REPLY):
            self._raise_if_error(check_reply(raw, NO_ID, self._where))
        return raw

    def send_text(self, text: str) -> str:
        """Send a plain-text message and return the server's reply text.

        A text starting with ``{`` is a JSON request on the wire; its raw
        reply line is returned. An error reply to plain text (say the line
        is too long) raises :class:`~spike.errors.RemoteError`.
        """
        reply = self.send_line(text)
        if not text.startswith("{") and reply.startswith('{"'):
            # Plain text comes back as plain text; an error reply is JSON.
            try:
                parsed = _decode_reply(reply.encode())
            except ProtocolError:
                return reply  # some other server's text that starts with {
            self._raise_if_error(parsed)
        return reply

    def request(self, op: str, **params: Any) -> Any:
        """Send the JSON request ``op`` with ``params``; return its result.

        Raises :class:`~spike.errors.RemoteError` for an ``ok: false``
        reply, and :class:`~spike.errors.ProtocolError` (closing the
        connection) for a reply that is not this request's protocol reply.
        """
        request_id = self._next_id
        self._next_id += 1
        data = encode_request(op, params, request_id)
        # No look before sending: it costs two system calls per request (a
        # measurable share of a loopback round trip), and a line that arrived
        # unasked cannot carry this request's id, so check_reply refuses it.
        self._check_nothing_unasked(look=False)
        deadline = self._deadline()
        self._send(data, deadline)
        raw = self._receive_line(deadline)
        try:
            reply = check_reply(raw, request_id, self._where)
        except ProtocolError:
            self.close()  # the replies are out of step, or it is not a pipe server
            raise
        self._raise_if_error(reply)
        return reply["result"]

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    @property
    def closed(self) -> bool:
        """True once the connection is closed."""
        return self._sock is None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Client {self._where}{' closed' if self._sock is None else ''}>"

    # -- internals -----------------------------------------------------------
    def _authenticate(self, token: str) -> None:
        """Send the ``auth`` line. A server with no notion of tokens (another
        team's pipe) answers ``unknown_op``: then none is needed."""
        try:
            self.request(AUTH_OP, token=token)
        except RemoteError as exc:
            if exc.code == UNKNOWN_OP:
                return
            self.close()
            raise
        except BaseException:
            self.close()  # the caller never gets the client to close
            raise

    def _raise_if_error(self, reply: dict[str, Any]) -> None:
        if reply["ok"]:
            return
        error = reply["error"]
        code, message = error["code"], error["message"]
        if code == UNAUTHORIZED:
            self.close()  # the server has closed it
            if not self._token_given:
                message = f"{self._where} needs a token: {_ASK}"
            elif message.startswith("wrong token"):
                message = f"{self._where} refused the token: {_ASK}"
            else:  # refused for another reason (too many failed attempts)
                message = f"{self._where} refused the connection: {message}"
            raise Unauthorized(code, message, reply.get("id", NO_ID))
        raise RemoteError(code, message, reply.get("id", NO_ID), error.get("details"))

    def _deadline(self) -> float | None:
        return None if self.timeout is None else time.monotonic() + self.timeout

    @staticmethod
    def _time_left(deadline: float | None) -> float | None:
        """Seconds until ``deadline`` (None: no deadline); TimeoutError once it has passed."""
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def _send(self, data: bytes, deadline: float | None) -> None:
        sock = self._require_socket()
        with self._map_os_errors("send"):
            # sendall() counts its timeout for the whole call, not per chunk.
            sock.settimeout(self._time_left(deadline))
            sock.sendall(data)

    def _receive_line(self, deadline: float | None) -> bytes:
        lines: list[bytes] = []
        while not lines:
            sock = self._require_socket()
            with self._map_os_errors("receive"):
                data = self._recv_slice(sock, deadline)
            if data is None:
                continue  # only a slice ended
            if not data:
                self.close()
                closed = f"{self._where} closed the connection"
                raise ConnectionClosed(
                    self._cut_reply(closed) or self._send_failure or f"{closed} without a reply"
                )
            lines = self._feed(data)
        if self._send_failure is not None:
            self.close()  # the connection is broken; that reply was its last
        self._extra = lines[1:]
        return lines[0]

    def _feed(self, data: bytes) -> list[bytes]:
        try:
            return self._framer.feed(data)
        except LineTooLong as exc:
            self.close()
            raise ProtocolError(exc.code, f"reply from {self._where}: {exc.message}") from None

    def _check_nothing_unasked(self, look: bool) -> None:
        """Raise ProtocolError (and hang up) if the server sent anything since
        the last reply; with ``look``, first take in what has arrived meanwhile.

        A text reply carries nothing to match it to its message, so a line
        sent unasked would otherwise be returned as the next reply, and
        every reply after it would be one behind.
        """
        if self._sock is None:
            return  # closed: sending says so
        if look and not self._extra:
            # Whatever came after the last reply has usually arrived by the
            # time the caller sends again; one recv that does not wait finds it.
            self._sock.settimeout(0.0)
            try:
                data = self._sock.recv(65536)
            except OSError:  # nothing there (or a broken connection, for send to report)
                data = b""
            if data:
                self._extra = self._feed(data)
        if self._extra:
            first, more = self._extra[0], len(self._extra) - 1
            others = f" (and {plural(more, 'more line')})" if more else ""
            self.close()
            raise ProtocolError(
                BAD_REQUEST,
                f"{self._where} sent a line that answers no request: {shorten(first)}{others}; "
                "a pipe server sends exactly one reply line per message (no banners)",
            )
        pending = self._framer.partial_bytes
        if pending:
            self.close()
            raise ProtocolError(
                BAD_REQUEST,
                f"{self._where} sent {plural(pending, 'byte')} that answer no request "
                f"(the start of a line: {shorten(self._framer.partial)}); a pipe server sends "
                "exactly one reply line per message (no banners)",
            )

    def _recv_slice(self, sock: socket.socket, deadline: float | None) -> bytes | None:
        """Up to 64 KiB of reply; None when a slice of the wait ended early."""
        left = self._time_left(deadline)
        # Wait in short slices: on Windows a blocked recv() does not see
        # Ctrl+C until it returns (CPython issue 85609).
        sock.settimeout(_WAKE_EVERY if left is None else min(left, _WAKE_EVERY))
        try:
            return sock.recv(65536)
        except TimeoutError:
            if deadline is None or time.monotonic() < deadline:
                return None
            raise

    @contextlib.contextmanager
    def _map_os_errors(self, stage: Literal["connect", "send", "receive"]) -> Iterator[None]:
        """Turn what the socket raises during ``stage`` into the matching PipeError.

        The one place that knows how operating-system errors read to a user
        (httpcore's ``map_exceptions`` in spirit). After a timeout, or a
        failure after connecting, the connection is closed: a late reply
        would otherwise be taken for the next one.
        """
        try:
            yield
        except TimeoutError:
            if stage == "connect":
                reason = f"timed out after {seconds_text(self.timeout)} s"
                raise PipeTimeout(_connect_failure(self.host, self.port, reason)) from None
            self.close()
            if stage == "send":
                raise PipeTimeout(
                    f"sending to {self._where} did not finish within "
                    f"{seconds_text(self.timeout)} s (the server is not reading)"
                ) from None
            raise PipeTimeout(self._late_reply()) from None
        except (OSError, OverflowError, UnicodeError) as exc:
            if stage == "connect":
                raise ConnectError(
                    _connect_failure(self.host, self.port, _connect_reason(exc))
                ) from None
            reason = str(getattr(exc, "strerror", None) or exc)
            if stage == "send":
                # A server that refuses a message (line_too_long) answers,
                # then hangs up while we are still sending. Its answer may
                # already be waiting: the reply read that comes next reports
                # it, or this failure if there is none.
                self._send_failure = f"connection to {self._where} lost while sending: {reason}"
                return
            self.close()
            raise ConnectionClosed(
                self._cut_reply(f"connection to {self._where} lost ({reason})")
                or self._send_failure
                or f"connection to {self._where} lost: {reason}"
            ) from None

    def _cut_reply(self, ended: str) -> str | None:
        """``ended`` (how the connection ended) "in the middle of a reply" if
        part of a reply line had arrived; None if no byte of it came."""
        pending = self._framer.partial_bytes
        if not pending:
            return None
        return (
            f"{ended} in the middle of a reply: {plural(pending, 'byte')} arrived "
            f"without an end of line ({shorten(self._framer.partial)})"
        )

    def _late_reply(self) -> str:
        waited = seconds_text(self.timeout)
        pending = self._framer.partial_bytes
        if not pending:
            return f"no reply from {self._where} within {waited} s"
        return (
            f"no complete reply from {self._where} within {waited} s "
            f"({plural(pending, 'byte')} arrived, but no end of line)"
        )

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionClosed(f"the connection to {self._where} is closed")
        return self._sock


def _encode_line(line: str) -> bytes:
    if "\n" in line:
        raise ValueError("a message cannot contain a newline (each line is one message)")
    try:
        return line.encode() + b"\n"
    except UnicodeEncodeError as exc:
        # A lone surrogate: typically bytes that were not UTF-8, decoded
        # with "surrogateescape" (a POSIX command line, a file name).
        raise ValueError(
            f"a message must be valid Unicode text; it has {shorten(line[exc.start : exc.end])} "
            f"at position {exc.start} (bytes that were not UTF-8?)"
        ) from None


def check_reply(raw: bytes, request_id: Any, where: str) -> dict[str, Any]:
    """Parse ``raw``, the reply line to a JSON request, and check it is one.

    ``request_id`` is the request's ``"id"`` (:data:`~spike.protocol.NO_ID`
    when it had none). The reply must be a JSON object with ``ok`` and
    ``result`` or ``error``, carrying the same id; an error reply may carry
    none, since the server could not read the id of a request that was not
    valid JSON. Returns the reply, error replies included; raises
    :class:`~spike.errors.ProtocolError` naming ``where`` (``HOST:PORT``)
    and showing the start of what came back.
    """
    try:
        reply = _decode_reply(raw)
    except ProtocolError as exc:
        what = {
            BAD_UTF8: "is not valid UTF-8",
            BAD_JSON: "is not JSON",
        }.get(exc.code, "is not a pipe reply (" + exc.message.removeprefix("reply is ") + ")")
        raise ProtocolError(exc.code, f"reply from {where} {what}: {shorten(raw)}") from None
    reply_id = reply.get("id", NO_ID)
    if not _same_id(reply_id, request_id) and not (reply_id is NO_ID and not reply["ok"]):
        wanted = "no id" if request_id is NO_ID else f"id {shorten(request_id)}"
        got = "no id" if reply_id is NO_ID else f"id {shorten(reply_id)}"
        raise ProtocolError(
            BAD_REQUEST,
            f"reply from {where} has {got}, but the request had {wanted}: {shorten(raw)}",
        )
    return reply


def request_id_of(line: str) -> Any:
    """The ``"id"`` a server reads from the JSON request ``line``
    (:data:`~spike.protocol.NO_ID` if it has none or cannot be read)."""
    try:
        message = parse_message(line.encode(errors="surrogateescape"))
    except UnicodeEncodeError:
        return NO_ID
    return NO_ID if isinstance(message, Text) else message.id


def _same_id(a: Any, b: Any) -> bool:
    # JSON values, compared as JSON: 1, 1.0 and true are three ids (Python's
    # == says they are one).
    if a is NO_ID or b is NO_ID:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_id(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_id(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def seconds_text(seconds: float | None) -> str:
    """``5``, ``0.3``, ``1e-05``: a number of seconds as a person writes it."""
    if seconds is None:
        return "unlimited"
    return f"{seconds:g}" if math.isfinite(seconds) else str(seconds)


def _connect_failure(host: str, port: int, reason: str) -> str:
    """The one-line message for a failed connect to ``host:port``.

    Adds a hint when ``host`` is a wildcard address such as ``0.0.0.0`` or
    ``::``: a server's "Serving on 0.0.0.0:3000" means it listens on every
    interface, which is no address to connect to.
    """
    message = f"cannot connect to {format_address((host, port))}: {reason}"
    if is_wildcard(host):
        message += (
            f'; {host} means "every interface" on the server side, not an address to '
            "connect to: use 127.0.0.1 (same machine) or the server's IP address"
        )
    return message


def _connect_reason(exc: BaseException) -> str:
    """Why connecting failed, in a user's words."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running?)"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    if isinstance(exc, UnicodeError):
        # The name cannot even be written as a DNS name ("a..b", a label
        # over 63 characters): Python refuses it before asking DNS.
        return "not a valid host name"
    return str(getattr(exc, "strerror", None) or exc)
