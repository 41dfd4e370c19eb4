"""The token gate: what a connection must send first when its server has a
token, and the books on the addresses that keep failing.

A server with a token gives each new connection one short first line (at
most :data:`~spike.protocol.MAX_AUTH_LINE_BYTES`) and ``auth_timeout``
seconds to send it; :meth:`Gate.check` judges that line. The connection
holds the line's bytes meanwhile (nothing else); the gate holds the
deadlines and the failures per address. After :data:`MAX_FAILURES` failures
within :data:`FAILURE_WINDOW` seconds from one address, that address's new
connections are turned away for :data:`BLOCK_SECONDS`, logged once per
episode. With a 128-bit token guessing is hopeless anyway: the limit keeps a
guesser, or a teammate's script retrying a stale token, from filling the log
and the loop. The token itself is never logged, shown or echoed.

The rule depends on how the server listens, not on who connects: a proxy or
an SSH tunnel makes every caller look local. (Redis' protected mode and
Jupyter's printed token are the models.)
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import ipaddress
import math
import socket
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from .._logwriter import EventLog
from ..errors import UNAUTHORIZED
from ..protocol import (
    AUTH_OP,
    MAX_AUTH_LINE_BYTES,
    Request,
    check_token,
    encode_error,
    encode_result,
    format_address,
    parse_message,
)

__all__ = [
    "BLOCK_SECONDS",
    "DEFAULT_AUTH_TIMEOUT",
    "FAILURE_WINDOW",
    "MAX_FAILURES",
    "Gate",
    "HidingLog",
    "hide_token",
    "no_token_needed",
]

# Long enough to paste a token into `nc` after connecting; short enough
# that silent connections cannot pile up (the bound is 10 s).
DEFAULT_AUTH_TIMEOUT = 10.0
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
BLOCK_SECONDS = 60.0
# Addresses remembered at once: an attacker with many addresses evicts the
# oldest records instead of growing the table (each address still gets only
# MAX_FAILURES tries per window).
_MAX_ADDRESSES = 4096

_ASK = "ask its owner for the one it printed at start"
_NEEDS = (
    f'this server needs a token: the first line must be {{"op": "auth", "token": "..."}}; {_ASK}'
)
_TOO_LONG = f"the first line is longer than {MAX_AUTH_LINE_BYTES} bytes; {_NEEDS}"
_NO_TOKEN = f'the auth line has no "token" string; {_ASK}'
_WRONG = "wrong token: ask the server's owner for the one it printed at start"
_BLOCKED = encode_error(
    UNAUTHORIZED,
    "too many failed attempts from this address; try again in a minute with the right token",
)


class Waiting(Protocol):
    """A connection that has not sent its auth line yet."""

    def auth_timed_out(self) -> None:
        """Its ``auth_timeout`` passed: refuse it."""
        ...


W = TypeVar("W", bound=Waiting)


class _Record:
    """Failures from one address: how many since when, and any block."""

    __slots__ = ("blocked_until", "count", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.count = 0
        self.blocked_until = -math.inf


class Gate(Generic[W]):
    """One server's token, the auth deadlines of its connections, and the
    failures of the addresses that connect to it.

    Methods for a connection: ``check(line)`` judges a first line;
    ``answer(request)`` an ``auth`` request; ``failed(peer, why, now)``
    logs and counts a refusal; ``passed(conn)``. For the server:
    ``admit(conn, now)`` starts a new connection's deadline,
    ``turn_away(sock, peer, now)`` closes a connection from a blocked
    address, ``forget(conn)``, ``expire(now, drop)``.
    """

    def __init__(self, token: str, timeout: float, error_log: Callable[[str], None]) -> None:
        self._token = check_token(token).encode()  # never printed: no __repr__ shows it
        self.timeout = timeout
        self._log = error_log
        # Deadlines are "now + timeout", so insertion order is deadline order.
        self._due: collections.OrderedDict[W, float] = collections.OrderedDict()
        self._records: collections.OrderedDict[str, _Record] = collections.OrderedDict()

    def __repr__(self) -> str:
        return f"<Gate waiting={len(self._due)} addresses={len(self._records)}>"

    # -- judging ---------------------------------------------------------------
    def check(self, line: bytes) -> tuple[bytes, str]:
        """The reply to a connection's first line, and why it is refused
        (an empty string when it authenticates)."""
        if len(line) > MAX_AUTH_LINE_BYTES:
            return self.too_long()
        message = parse_message(line)
        if type(message) is not Request or message.op != AUTH_OP:
            return encode_error(UNAUTHORIZED, _NEEDS), "its first line was not the auth line"
        return self.answer(message)

    def answer(self, request: Request) -> tuple[bytes, str]:
        """The reply to an ``auth`` request, and why it is refused (or "")."""
        token = request.params.get("token")
        if type(token) is not str:
            return encode_error(UNAUTHORIZED, _NO_TOKEN, request.id), "its auth line had no token"
        # Constant time: how long the comparison takes says nothing about
        # how much of a guess was right.
        if not hmac.compare_digest(token.encode(errors="surrogatepass"), self._token):
            return encode_error(UNAUTHORIZED, _WRONG, request.id), "wrong token"
        return encode_result({"token_required": True}, request.id), ""

    def too_long(self) -> tuple[bytes, str]:
        """A first line that has grown past the limit before its newline."""
        return encode_error(UNAUTHORIZED, _TOO_LONG), _TOO_LONG.partition(";")[0]

    def timed_out(self) -> tuple[bytes, str]:
        """A connection that sent no whole first line within ``timeout``."""
        why = f"no auth line within {self.timeout:g} s"
        return encode_error(UNAUTHORIZED, f"{why}; {_NEEDS}"), why

    # -- failures per address ------------------------------------------------------
    def failed(self, peer: tuple[Any, ...], why: str, now: float) -> None:
        """Log a refusal with the peer's address and count it; the failure
        that reaches the limit starts a block, logged once."""
        self._log(f"Error: {format_address(peer)} refused: {why}")
        key = _address_of(peer)
        records = self._records
        record = records.get(key)
        if record is None or now - record.since > FAILURE_WINDOW:
            record = records[key] = _Record(now)
            if len(records) > _MAX_ADDRESSES:
                records.popitem(last=False)
        records.move_to_end(key)
        record.count += 1
        if record.count >= MAX_FAILURES and record.blocked_until <= now:
            record.blocked_until = now + BLOCK_SECONDS
            self._log(
                f"Error: {key} failed to authenticate {record.count} times within "
                f"{FAILURE_WINDOW:g} s; its new connections are refused for {BLOCK_SECONDS:g} s"
            )

    def turn_away(self, sock: socket.socket, peer: tuple[Any, ...], now: float) -> bool:
        """If ``peer``'s address is blocked: say so in one reply, close
        ``sock`` and return True (nothing is logged: the block was)."""
        if not self._records:  # no failures at all: no lookup per connection
            return False
        record = self._records.get(_address_of(peer))
        if record is None or record.blocked_until <= now:
            return False
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(_BLOCKED)
            sock.shutdown(socket.SHUT_WR)
            # Read what has already arrived, so that closing sends no reset
            # that could destroy the reply on its way.
            sock.recv(MAX_AUTH_LINE_BYTES)
        sock.close()
        return True

    # -- deadlines -------------------------------------------------------------------
    def admit(self, conn: W, now: float) -> None:
        """``conn`` is new: it has ``timeout`` seconds to authenticate."""
        self._due[conn] = now + self.timeout

    def forget(self, conn: W) -> None:
        """``conn`` authenticated, or closed: no deadline."""
        self._due.pop(conn, None)

    @property
    def waiting(self) -> bool:
        """True while a connection has not authenticated yet."""
        return bool(self._due)

    def expire(self, now: float, drop: Callable[[W, Exception], None]) -> float:
        """Refuse the connections whose deadline has passed (``drop`` one
        whose refusal raises); return when the next is due (inf: none)."""
        due = self._due
        while due:
            conn, when = next(iter(due.items()))
            if when > now:
                return when
            del due[conn]
            try:
                conn.auth_timed_out()
            except Exception as exc:  # a bug must cost one client, not all
                drop(conn, exc)
        return math.inf


def no_token_needed(request: Request) -> bytes:
    """The reply to ``auth`` from a server without a token: any client may
    always send one."""
    return encode_result({"token_required": False}, request.id)


def _address_of(peer: tuple[Any, ...]) -> str:
    """The address failures are counted by: the peer's IP without its port
    (an IPv4 client of a dual-stack ``::`` server as plain IPv4)."""
    host = str(peer[0])
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def hide_token(line: bytes) -> bytes:
    """``line`` as the log shows it: an ``auth`` line, or a broken line that
    may be one, without its token (the caller skips lines without ``"token"``)."""
    if b'"token"' not in line:
        return line
    message = parse_message(line)
    if type(message) is Request and message.op != AUTH_OP:
        return line
    return _HIDDEN


_HIDDEN = b"(a line with a token, not shown)"


class HidingLog:
    """An :class:`~spike._logwriter.EventLog` that never shows ``token``:
    wherever it appears (a client's line, an op's error), it is replaced.
    Only a server with a token wraps its logs in one, so a server without
    pays nothing; a server with one pays a substring search per log call."""

    def __init__(self, log: EventLog, token: str) -> None:
        self._log = log
        self._text = token
        self._raw = token.encode()

    def __repr__(self) -> str:
        return f"<HidingLog {self._log!r}>"

    def __call__(self, line: str) -> None:
        self._log(line.replace(self._text, _HIDDEN_TOKEN) if self._text in line else line)

    def line(self, prefix: str, raw: bytes) -> None:
        self._log.line(prefix, raw.replace(self._raw, _HIDDEN_RAW) if self._raw in raw else raw)

    def lines(self, prefix: str, lines: Sequence[bytes], joined: bytes | None = None) -> None:
        token = self._raw
        if token in (b"\n".join(lines) if joined is None else joined):
            self._log.lines(prefix, [raw.replace(token, _HIDDEN_RAW) for raw in lines])
        else:
            self._log.lines(prefix, lines, joined)


_HIDDEN_TOKEN = "(the token, not shown)"
_HIDDEN_RAW = _HIDDEN_TOKEN.encode()
