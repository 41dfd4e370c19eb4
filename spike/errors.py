"""Every error the spike raises on purpose, in one place.

::

    PipeError
    ├── ProtocolError       a message broke the protocol (code, message, request_id)
    │   └── LineTooLong     a line grew past the framer's limit
    ├── RemoteError         the other side answered ``ok: false`` (code, message, request_id)
    ├── ConnectError        no connection could be made
    ├── PipeTimeout         connecting, or an exchange, passed its deadline
    ├── ConnectionClosed    the server hung up before replying
    └── BindError           the server could not listen on host:port
        └── AddressInUseError

It also holds what those errors carry: the error codes of an ``ok: false``
reply, :data:`NO_ID`, and :func:`as_text`, which makes any value a
message. It imports nothing of the project, so every other module can
import it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BAD_JSON",
    "BAD_REQUEST",
    "BAD_UTF8",
    "ERROR_CODES",
    "LINE_TOO_LONG",
    "NO_ID",
    "OP_FAILED",
    "OVERLOADED",
    "UNKNOWN_OP",
    "AddressInUseError",
    "BindError",
    "ConnectError",
    "ConnectionClosed",
    "LineTooLong",
    "PipeError",
    "PipeTimeout",
    "ProtocolError",
    "RemoteError",
    "as_text",
]

BAD_UTF8 = "bad_utf8"
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
OP_FAILED = "op_failed"
LINE_TOO_LONG = "line_too_long"
OVERLOADED = "overloaded"
ERROR_CODES = (BAD_UTF8, BAD_JSON, BAD_REQUEST, UNKNOWN_OP, OP_FAILED, LINE_TOO_LONG, OVERLOADED)


class _NoId:
    """Type of :data:`NO_ID`: a request that carried no ``"id"`` key."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_ID"


#: Marks "the request had no id" (``None`` is a valid id: JSON ``null``).
NO_ID: Any = _NoId()


def as_text(value: object) -> str:
    """``value`` as a message's text: a string as it is, anything else as its
    ``str()``; if that fails too (an op's object whose ``__str__`` raises),
    its ``repr()`` or, failing that, its type's name. Never raises (but for
    ``MemoryError`` and the like)."""
    if isinstance(value, str):
        return str.__str__(value)  # a subclass as a plain str (its __str__ may lie)
    for show in (str, repr):
        try:
            return str.__str__(show(value))
        except Exception:  # an object that cannot show itself: try the next way
            continue
    return f"<{type(value).__name__} that cannot be shown as text>"


class PipeError(Exception):
    """Base class of every error the spike package raises on purpose."""


class _CodedError(PipeError):
    """An error reply's parts: ``code``, ``message``, ``request_id``
    (:data:`NO_ID` when the request's id is unknown) and ``details`` (None,
    or a JSON value with more about the error, for programs).

    ``code`` and ``message`` are always strings: anything else passed is
    turned into text by :func:`as_text`.
    """

    def __init__(
        self, code: str, message: str, request_id: Any = NO_ID, details: Any = None
    ) -> None:
        code, message = as_text(code), as_text(message)
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details


class ProtocolError(_CodedError):
    """A message broke the protocol; ``code`` is one of :data:`ERROR_CODES`.

    The server turns it into an ``ok: false`` reply; the client raises it
    when a reply line cannot be understood. ``request_id`` is the request's
    ``"id"`` when it could be read, else :data:`NO_ID`.
    """


class LineTooLong(ProtocolError):
    """A line grew past the framer's limit.

    ``lines`` holds the complete lines that came before it in the same
    chunk (they are valid messages and must still be answered).
    """

    def __init__(self, limit: int, lines: list[bytes]) -> None:
        super().__init__(LINE_TOO_LONG, f"line longer than {limit} bytes")
        self.limit = limit
        self.lines = lines


class RemoteError(_CodedError):
    """The other side answered ``ok: false``: ``code``, ``message``, ``request_id``."""


class ConnectError(PipeError):
    """No connection could be made (nothing listening, unknown host, ...)."""


class PipeTimeout(PipeError):
    """Connecting, or an exchange (send and complete reply), passed its deadline."""


class ConnectionClosed(PipeError):
    """The server closed the connection before replying."""


class BindError(PipeError):
    """The server could not listen on the requested host and port."""


class AddressInUseError(BindError):
    """Another program already listens on that host and port."""
