"""The pipe's wire protocol, without any sockets (a "sans-IO" core).

Both the server and the client frame bytes with this module, so the two
sides can never disagree on what a message is.

The rules
=========
* The stream is UTF-8 text cut into lines by ``\\n``. One line is one
  message, and every message gets exactly one reply line, in order.
  A ``\\r`` just before the ``\\n`` is dropped, so ``telnet`` on Windows
  and Java's ``println`` work unchanged.
* A line that does not start with ``{`` is **plain text**. The reply is the
  same text as one line, so ``nc 127.0.0.1 3000`` or telnet is a usable
  client (Redis accepts "inline commands" for the same reason).
* A line that starts with ``{`` is a **JSON request**: an object with a
  string ``"op"``, an optional ``"id"`` of any JSON type, and the op's
  parameters as further keys, for example
  ``{"op": "echo", "id": 7, "text": "hi"}``. The reply is one JSON object
  line. It repeats ``"id"`` when the request had one and then holds either
  ``"ok": true`` with a ``"result"``::

      {"id":7,"ok":true,"result":{"text":"hi"}}

  or ``"ok": false`` with an ``"error"`` holding a ``code`` and a
  human-readable ``message`` (both always strings) and, when the op gave
  them, ``details``: any JSON value with more about the error, for
  programs (:class:`~spike.ops.BadRequest`)::

      {"id":7,"ok":false,"error":{"code":"unknown_op","message":"..."}}

* Error codes: ``bad_utf8`` (the line is not valid UTF-8), ``bad_json``
  (starts with ``{`` but is not valid JSON), ``bad_request`` (valid JSON but
  not an object with a string ``"op"``, or parameters the op rejects),
  ``unknown_op``, ``op_failed`` (the op itself crashed; the server keeps
  running), ``op_timeout`` (the op ran past the server's op timeout; its
  late result is dropped), ``line_too_long`` (the line exceeds the server's limit,
  1 MiB by default), ``overloaded`` (the server holds too much
  unfinished input from all its clients together, and this connection held
  the most) and ``unauthorized`` (see the token below); the server closes
  the connection after any of the last three.
  An error reply is always a JSON line, even for plain-text input. After
  any other error the connection stays usable.
* **A token**: a server may require one (``spike-server`` does whenever it
  listens beyond this computer). A connection's first line must then be
  ``{"op": "auth", "token": "..."}``, answered
  ``{"ok":true,"result":{"token_required":true}}``. Any other first line,
  a wrong token, a first line over 4 KiB or none within 10 seconds gets one
  ``unauthorized`` reply and the connection is closed. A server without a
  token answers ``auth`` with ``"token_required": false``, so a client may
  always send it; sent again later, ``auth`` is checked but closes nothing.
* Bytes left without a final ``\\n`` when the peer closes its side are still
  one message.
* A server may also treat an unterminated line as complete once no new
  bytes have arrived for a short while (``flush_after``, 0.25 s by
  default), so a client that sends ``"Hello"`` without a newline and waits
  for an answer still gets one. A lone ``\\n`` (or ``\\r\\n``) arriving
  right after such a flush only completes the flushed line and is not a
  second message.

JSON is read and written with ``orjson`` (a dependency, where it installs),
else with the standard library, and both give the same reply to the same op
result: the standard library's ``json`` decides, and orjson is a faster way
to its answer. What a result may hold:

* JSON's own types, written compactly in UTF-8: ``dict``, ``list`` and
  ``tuple``, ``str``, ``int`` (of any size, up to Python's 4,300-digit
  limit for turning one into text), ``float``, ``bool`` and ``None``, and
  their subclasses.
* Three types with one obvious spelling, written so: an ``Enum`` member as
  its value, a ``UUID`` as its usual string, a ``datetime``, ``date`` or
  ``time`` as its ``isoformat()`` (ISO 8601).
* NaN and Infinity, which JSON cannot carry, are written as ``null``, as
  JavaScript's ``JSON.stringify`` writes them (and orjson always does).
* Dict keys that are not strings are written as ``json`` writes them
  (``1`` as ``"1"``, ``True`` as ``"true"``, ``None`` as ``"null"``).
* Anything else is refused with ``TypeError`` or ``ValueError``, and the
  server answers ``op_failed``: bytes, sets, dataclasses, ``Decimal``, a
  cycle, a key of another type or a NaN key, and a dict in which two keys
  would be written alike (``{1: "a", "1": "b"}``), since a reader would
  keep one value and lose the other.

Two differences remain: a float may be spelled differently (``1e-05`` by
json, ``0.00001`` by orjson: the same number), and, reading, orjson takes an
integer beyond 64 bits as a float where the standard library keeps it exact.

This module only turns bytes into messages and replies into bytes:
:class:`LineFramer` cuts lines with a size cap, :func:`parse_message`
classifies one line as a typed message (:class:`Text`, :class:`Request`,
:class:`Invalid`), and the ``encode_*`` functions build reply and request
lines (:func:`format_address` writes ``HOST:PORT`` the way both sides print
it); :func:`decode_json` reads JSON as a request is read. It imports nothing
of the package but :mod:`spike.errors`, where the error codes and
exceptions are.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any, final
from uuid import UUID

from .errors import (
    BAD_JSON,
    BAD_REQUEST,
    BAD_UTF8,
    NO_ID,
    LineTooLong,
    ProtocolError,
    as_text,
    first_line,
)

try:  # orjson: several times faster, the same replies; the stdlib is the fallback.
    import orjson as _orjson  # type: ignore[import-not-found, unused-ignore]
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment, unused-ignore]

__all__ = [
    "AUTH_OP",
    "DEFAULT_HOST",
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_PORT",
    "JSON_BACKEND",
    "MAX_AUTH_LINE_BYTES",
    "Invalid",
    "LineFramer",
    "Message",
    "NonFiniteNumber",
    "Request",
    "Text",
    "check_token",
    "check_utf8",
    "decode_json",
    "decode_reply",
    "encode_error",
    "encode_request",
    "encode_result",
    "encode_text",
    "format_address",
    "parse_message",
]

DEFAULT_MAX_LINE_BYTES = 1_048_576
#: The op of a connection's first line when its server has a token, and the
#: longest that line may be before the token is checked (a line, not a budget).
AUTH_OP = "auth"
MAX_AUTH_LINE_BYTES = 4096
#: Where a server listens, and a client connects, unless told otherwise.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000


class LineFramer:
    """Cuts a byte stream into lines, holding at most ``max_line_bytes``.

    Feed it whatever ``recv()`` returned; it returns the complete lines
    (without ``\\n`` or a trailing ``\\r``) and keeps the unterminated rest.
    The limit counts a line's bytes before its ``\\n``.
    """

    __slots__ = ("_after_flush", "_partial", "max_line_bytes", "mid_line")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()
        # True right after flush(): a newline that arrives next only ends
        # the line that was already flushed.
        self._after_flush = False
        #: True if the next bytes continue an earlier line: a held partial
        #: line, or a flushed line whose late newline may still come (so the
        #: next chunk cannot be taken as a line of its own). Read-only; an
        #: attribute kept by feed() and flush(), not a property, because a
        #: server reads it for every chunk it receives.
        self.mid_line = False

    @property
    def partial(self) -> bytes:
        """The bytes held for a line that has no ``\\n`` yet (a copy)."""
        return bytes(self._partial)

    @property
    def partial_bytes(self) -> int:
        """Number of bytes held for a line that has no ``\\n`` yet."""
        return len(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the lines they complete, in order.

        Raises :class:`LineTooLong` (whose ``lines`` are the complete lines
        before the offender) when a line exceeds the limit. After that the
        framer holds nothing; the caller is expected to close the stream.
        """
        try:
            return self._feed(data)
        finally:
            self.mid_line = bool(self._partial) or self._after_flush

    def _feed(self, data: bytes) -> list[bytes]:
        if self._after_flush:
            self._after_flush = False
            if data[:1] == b"\n":
                data = data[1:]
            elif data[:2] == b"\r\n":
                data = data[2:]
            elif data == b"\r":
                # The "\n" may still follow in the next chunk.
                self._after_flush = True
                return []
        partial = self._partial
        end = data.find(b"\n")
        # Fast path: one whole line in one chunk (a request/reply client).
        if end == len(data) - 1 and end >= 0 and not partial:
            if end > self.max_line_bytes:
                raise LineTooLong(self.max_line_bytes, [])
            if end and data[end - 1] == 13:  # "\r"
                return [data[: end - 1]]
            return [data[:end]]
        limit = self.max_line_bytes
        if end < 0:
            partial += data
            if len(partial) > limit:
                self._partial = bytearray()
                raise LineTooLong(limit, [])
            return []
        lines = data.split(b"\n")
        rest = lines.pop()
        if partial:
            partial += lines[0]
            lines[0] = bytes(partial)
            # Let go of the held buffer instead of clear()ing it: shrinking a
            # large buffer in place makes the allocator return its memory to
            # the system, and every later long line then pays page faults on
            # fresh memory (many times the cost of the copy itself).
            self._partial = partial = bytearray()
        if (
            len(data) > limit
            or len(lines[0]) > limit
            or data.find(b"\r") >= 0  # (find: a quicker `in` for bytes)
            or lines[0][-1:] == b"\r"
        ):
            # A line may be too long or end in "\r": look at each. Otherwise
            # (a pipelining client's many short lines) none needs a look:
            # every line but the first is a part of data, and the first has
            # been measured.
            for i, line in enumerate(lines):
                if len(line) > limit:
                    raise LineTooLong(limit, lines[:i])
                if line[-1:] == b"\r":
                    lines[i] = line[:-1]
        if rest:
            if len(rest) > limit:
                raise LineTooLong(limit, lines)
            partial += rest
        return lines

    def flush(self) -> bytes | None:
        """Return the held unterminated line as a message, or None if empty.

        Call it at end of stream, or when the line has sat idle long enough
        to count as complete. After a flush, a ``\\n`` arriving first only
        ends that line.
        """
        if not self._partial:
            return None
        line = bytes(self._partial)
        self._partial = bytearray()  # dropped, not shrunk (see feed())
        if line[-1:] == b"\r":
            line = line[:-1]
        self._after_flush = self.mid_line = True
        return line


# --- JSON codec: orjson when installed, else the standard library --------
class NonFiniteNumber(ValueError):
    """JSON that :func:`decode_json` refuses for a number no JSON can carry:
    ``NaN`` or ``Infinity`` (not JSON, though Python's json reads them), or
    ``1e999`` (JSON, but infinite as a float, so it could never be written
    back). ``text`` is the number as written."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(reason)
        self.text = text


def _reject_constant(name: str) -> Any:
    raise NonFiniteNumber(name, f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # orjson refuses such numbers too, so both codecs agree.
    value = float(text)
    if value - value != 0.0:  # inf - inf is nan
        raise NonFiniteNumber(text, f"number {text} is out of range")
    return value


_std_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


# --- writing JSON: one answer from either codec ---------------------------------
# The standard library's json is the reference; orjson, when installed, is
# only a faster way to the same reply. Its options send subclasses, dates
# and dataclasses to _default, and what it refuses (non-string keys,
# integers past 64 bits, lone surrogates, nesting past 254 levels) the
# reference writes or refuses. NaN and Infinity, which JSON cannot carry,
# orjson always writes as null (ijl/orjson#441), as JavaScript's
# JSON.stringify does; the reference writes them so too (_finite), since
# refusing them would mean scanning every reply orjson writes for "null".
_LEAF_TYPES = frozenset({str, int, float, bool, type(None)})
_STR_TYPE = frozenset({str})


def _default(value: Any) -> Any:
    """The non-JSON values both codecs write, spelled as orjson spells them;
    anything else is the TypeError json's own default raises."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (datetime.date, datetime.time)):  # a datetime is a date
        return value.isoformat()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _json_key(key: Any) -> str:
    """A dict key as json writes it (json refuses other types before this)."""
    if isinstance(key, str):
        return str.__str__(key)
    if key is True or key is False or key is None:
        return json.dumps(key)
    if isinstance(key, int):
        return int.__repr__(key)
    return float.__repr__(key)


def _check_keys(obj: Any) -> None:
    """ValueError if a dict in ``obj`` has two keys that JSON writes alike
    (``1`` and ``"1"``): a reader would keep one value and lose the other.

    Called once json has written ``obj``, so every key is a str, int, float,
    bool or None and there is no cycle. Python walks the containers; the
    types of their keys and items are checked in C, a container at a time.
    """
    if type(obj) in _LEAF_TYPES:
        return
    todo = [obj]
    for node in todo:  # grows as it goes
        items: Any = node
        if isinstance(node, dict):
            if not _STR_TYPE.issuperset(map(type, node)):
                _check_dict_keys(node)
            items = node.values()
        elif isinstance(node, Enum):  # written as its value (_default)
            todo.append(node.value)
            continue
        elif not isinstance(node, (list, tuple)):
            continue
        if not _LEAF_TYPES.issuperset(map(type, items)):
            todo += [item for item in items if type(item) not in _LEAF_TYPES]


def _check_dict_keys(mapping: dict[Any, Any]) -> None:
    seen: dict[str, Any] = {}
    for key in mapping:
        text = _json_key(key)
        if text in seen:
            raise ValueError(
                f"keys {seen[text]!r} and {key!r} are both written {text!r} in JSON, "
                "and one value would be lost"
            )
        seen[text] = key


_std_encode = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_default
).encode
_ascii_encode = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_default
).encode


def _finite(value: Any, inside: frozenset[int] = frozenset()) -> Any:
    """A copy of ``value`` with NaN and Infinity (values, not keys) as None,
    for json to write as orjson does. ``inside`` holds the containers on
    the way down, so a cycle is refused as json refuses it."""
    if isinstance(value, float):
        return value if value - value == 0.0 else None  # inf - inf is nan
    if isinstance(value, Enum):
        return _finite(value.value, inside)
    if not isinstance(value, (dict, list, tuple)):
        return value
    if id(value) in inside:
        raise ValueError("Circular reference detected")
    inside |= {id(value)}
    if isinstance(value, dict):
        return {key: _finite(item, inside) for key, item in value.items()}
    return [_finite(item, inside) for item in value]


_WHOLE: Any = object()


def _std_dumps(obj: Any, built_from: Any = _WHOLE) -> bytes:
    """``obj`` as compact UTF-8 JSON, written by the standard library.

    ``built_from`` names the values inside ``obj`` that came from outside
    (a reply's result and id): only their keys are checked, since the
    dicts around them, built here, have string keys. The whole of ``obj``
    if not given.
    """
    try:
        text = _std_encode(obj)
    except ValueError:  # NaN or Infinity (or a cycle, or an int of 4,300 digits)
        obj = _finite(obj)
        text = _std_encode(obj)
    _check_keys(obj if built_from is _WHOLE else built_from)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: \\u-escape everything
        return _ascii_encode(obj).encode()


if _orjson is not None:
    JSON_BACKEND = "orjson"
    _orjson_loads = _orjson.loads
    _orjson_dumps = _orjson.dumps
    _ORJSON_OPTS = (
        _orjson.OPT_PASSTHROUGH_SUBCLASS
        | _orjson.OPT_PASSTHROUGH_DATETIME
        | _orjson.OPT_PASSTHROUGH_DATACLASS
    )

    def _loads(line: bytes) -> Any:
        try:
            return _orjson_loads(line)
        except _orjson.JSONDecodeError:
            # orjson is stricter than the standard library (for example on
            # lone surrogate escapes); accept what json accepts so the
            # protocol does not depend on which codec is installed.
            return _std_loads(line.decode())

    def _dumps(obj: Any, built_from: Any = _WHOLE) -> bytes:
        try:
            dumped: bytes = _orjson_dumps(obj, default=_default, option=_ORJSON_OPTS)
        except TypeError:  # orjson's refusals: the reference decides
            return _std_dumps(obj, built_from)
        return dumped

else:
    JSON_BACKEND = "json"

    def _loads(line: bytes) -> Any:
        return _std_loads(line.decode())

    _dumps = _std_dumps


def decode_json(data: bytes) -> Any:
    """One JSON value, read as the protocol reads a request (with the same
    codec): ``ValueError`` if it is not JSON, :class:`NonFiniteNumber` (a
    ``ValueError``) for ``NaN``, ``Infinity`` or ``1e999``, and
    ``RecursionError`` for nesting too deep."""
    return _loads(data)


@final
@dataclass(slots=True)
class Text:
    """A plain-text message: ``text`` (valid UTF-8, without its newline)."""

    text: str


@final
@dataclass(slots=True)
class Request:
    """A JSON request: ``op``, ``id`` (:data:`NO_ID` if none) and the other keys as ``params``."""

    op: str
    id: Any
    params: dict[str, Any]


@final
@dataclass(slots=True)
class Invalid:
    """A line that breaks the protocol: the error reply's ``code`` and
    ``message``, and the request's ``id`` when it could be read."""

    code: str
    message: str
    id: Any = NO_ID

    def error(self) -> ProtocolError:
        """The same, as an exception."""
        return ProtocolError(self.code, self.message, self.id)


#: What :func:`parse_message` returns: one small type per kind of message.
Message = Text | Request | Invalid


def _not_utf8(exc: UnicodeDecodeError) -> Invalid:
    return Invalid(BAD_UTF8, f"not valid UTF-8 (byte {exc.start})")


def check_utf8(line: bytes) -> Invalid | None:
    """None if ``line`` is valid UTF-8, else its ``bad_utf8`` :class:`Invalid`.

    For a server that echoes text unchanged: it needs no :class:`Text`,
    only to know the line is text.
    """
    try:
        line.decode()
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    return None


def parse_message(line: bytes) -> Text | Request | Invalid:
    """Classify one line (without its newline) as :class:`Text`,
    :class:`Request` or :class:`Invalid` (``bad_utf8``, ``bad_json`` or
    ``bad_request``). Never raises.

    A request's ``params`` are the parsed object itself, without ``"op"``
    and ``"id"``.
    """
    if line[:1] != b"{":
        try:
            return Text(line.decode())
        except UnicodeDecodeError as exc:
            return _not_utf8(exc)
    try:
        request = _loads(line)
    except UnicodeDecodeError as exc:
        return _not_utf8(exc)
    except (ValueError, RecursionError) as exc:
        return Invalid(BAD_JSON, f"not valid JSON ({first_line(exc)})")
    if type(request) is not dict:
        return Invalid(BAD_REQUEST, "a request must be a JSON object")
    op = request.pop("op", None)
    request_id = request.pop("id", NO_ID)
    if type(op) is not str:
        return Invalid(BAD_REQUEST, 'a request needs "op" with a string value', request_id)
    return Request(op, request_id, request)


def encode_text(text: str) -> bytes:
    """A plain-text reply line. Raises ValueError if ``text`` holds a newline."""
    if "\n" in text:
        raise ValueError("a plain-text reply cannot contain a newline")
    return text.encode() + b"\n"


def encode_result(result: Any, request_id: Any = NO_ID) -> bytes:
    """An ``ok: true`` reply line. Raises TypeError/ValueError if not JSON-able."""
    if request_id is NO_ID:
        return _dumps({"ok": True, "result": result}, result) + b"\n"
    reply = {"id": request_id, "ok": True, "result": result}
    built_from = result if type(request_id) in _LEAF_TYPES else (request_id, result)
    return _dumps(reply, built_from) + b"\n"


def encode_error(code: str, message: str, request_id: Any = NO_ID, details: Any = None) -> bytes:
    """An ``ok: false`` reply line: ``error: {code, message}``, with
    ``details`` when they are not None.

    Never raises, so every error has a reply a client can read: a code or
    message that is not a string is sent as its text
    (:func:`~spike.errors.as_text`); details or an id that JSON cannot
    carry are left out, and the message says so.
    """
    code, message = as_text(code), as_text(message)
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        try:
            _dumps(details)
        except Exception:  # not JSON, or nested too deep: the op's mistake
            error["message"] = message = f"{message} (its details could not be sent as JSON)"
        else:
            error["details"] = details
    if request_id is not NO_ID:
        try:
            return _dumps({"id": request_id, "ok": False, "error": error}) + b"\n"
        except Exception:  # ids come from JSON, but one nested deep enough fails
            error["message"] = f"{message} (the request's id could not be sent back)"
    return _dumps({"ok": False, "error": error}) + b"\n"


def encode_request(
    op: str, params: dict[str, Any] | None = None, request_id: Any = NO_ID
) -> bytes:
    """A JSON request line ``{"op": ..., "id": ..., **params}``."""
    request: dict[str, Any] = {"op": op}
    if request_id is not NO_ID:
        request["id"] = request_id
    if params:
        if "op" in params or "id" in params:
            raise ValueError('"op" and "id" cannot be used as parameter names')
        request.update(params)
    return _dumps(request) + b"\n"


def check_token(token: object) -> str:
    """``token`` if a server can require it: a non-empty string whose auth
    line (:data:`AUTH_OP`) fits in :data:`MAX_AUTH_LINE_BYTES`; else ValueError."""
    if not isinstance(token, str) or not token:
        raise ValueError("a token must be a non-empty string")
    try:
        token.encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it
        raise ValueError("a token must be valid Unicode text") from None
    line = encode_request(AUTH_OP, {"token": token})
    if len(line) - 1 > MAX_AUTH_LINE_BYTES:
        raise ValueError(
            f"a token must fit in the {MAX_AUTH_LINE_BYTES}-byte auth line "
            f"(this one takes {len(line) - 1} bytes)"
        )
    return token


def decode_reply(line: bytes) -> dict[str, Any]:
    """Parse a JSON reply line into a dict with ``ok`` and ``result``/``error``.

    Raises :class:`ProtocolError` if the line is not a well-formed reply.
    """
    try:
        reply = _loads(line)
    except UnicodeDecodeError:
        raise ProtocolError(BAD_UTF8, "reply is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(BAD_JSON, f"reply is not valid JSON ({first_line(exc)})") from None
    if type(reply) is not dict or type(reply.get("ok")) is not bool:
        raise ProtocolError(BAD_REQUEST, 'reply is not an object with a boolean "ok"')
    if reply["ok"]:
        if "result" not in reply:
            raise ProtocolError(BAD_REQUEST, 'ok reply has no "result"')
    else:
        error = reply.get("error")
        if (
            type(error) is not dict
            or type(error.get("code")) is not str
            or type(error.get("message")) is not str
        ):
            raise ProtocolError(BAD_REQUEST, 'error reply has no "error" {code, message}')
    return reply


def format_address(address: tuple[Any, ...]) -> str:
    """``HOST:PORT`` as both sides print it, IPv6 hosts in brackets (``[::1]:3000``)."""
    host, port = address[0], address[1]
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"
