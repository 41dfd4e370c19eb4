"""Every error the spike raises on purpose, in one place.

::

    PipeError
    ├── ProtocolError       a message broke the protocol (code, message, request_id)
    │   └── LineTooLong     a line grew past the framer's limit
    ├── RemoteError         the other side answered ``ok: false`` (code, message, request_id)
    │   └── Unauthorized    the server needs a token and did not get the right one
    ├── ConnectError        no connection could be made
    ├── PipeTimeout         connecting, or an exchange, passed its deadline
    ├── ConnectionClosed    the server hung up before replying
    ├── BindError           the server could not listen on host:port
    │   └── AddressInUseError
    └── OpsLoadError        ``spike-server --ops`` could not load the ops it names

It also holds what those errors carry: the error codes of an ``ok: false``
reply, :data:`NO_ID`, :func:`first_line` (how any exception is told in one
line) and :func:`as_text`, which makes any value a message. It imports
nothing of the project, so every other module can
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
    "OP_TIMEOUT",
    "OVERLOADED",
    "UNAUTHORIZED",
    "UNKNOWN_OP",
    "AddressInUseError",
    "BindError",
    "ConnectError",
    "ConnectionClosed",
    "LineTooLong",
    "OpsLoadError",
    "PipeError",
    "PipeTimeout",
    "ProtocolError",
    "RemoteError",
    "Unauthorized",
    "as_text",
    "first_line",
]

BAD_UTF8 = "bad_utf8"
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
OP_FAILED = "op_failed"
OP_TIMEOUT = "op_timeout"
LINE_TOO_LONG = "line_too_long"
OVERLOADED = "overloaded"
UNAUTHORIZED = "unauthorized"
ERROR_CODES = (
    BAD_UTF8,
    BAD_JSON,
    BAD_REQUEST,
    UNKNOWN_OP,
    OP_FAILED,
    OP_TIMEOUT,
    LINE_TOO_LONG,
    OVERLOADED,
    UNAUTHORIZED,
)


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


class Unauthorized(RemoteError):
    """The server needs a token (its first line must be ``auth``) and this
    connection did not give the right one; the server has closed it.
    ``message`` says what to do, in the client's words."""


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


class OpsLoadError(PipeError):
    """``--ops MODULE:NAME`` (or ``FILE.py:NAME``) named ops that could not be
    loaded; the message says what was tried and what to do."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message that is not blank, or its type's name
    when there is none: a JSON decoder's error can run to several lines."""
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
