"""The pipe's client: a small blocking library on top of :mod:`spike.protocol`.

::

    from spike import Client

    with Client("127.0.0.1", 3000) as client:
        print(client.send_text("A message from CS361!"))  # plain-text echo
        print(client.request("info"))                      # a JSON op

Every failure is a :class:`~spike.protocol.PipeError`:
:class:`ConnectError` (nothing listening, unknown host),
:class:`PipeTimeout` (no reply in time), :class:`ConnectionClosed` (the
server hung up), :class:`~spike.protocol.ProtocolError` (a reply that breaks
the protocol) and :class:`~spike.protocol.RemoteError` (an ``ok: false``
reply, with ``.code`` and ``.message``).

From a terminal use ``spike-client`` (or ``python -m spike.client``).
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import socket
from typing import Any

from .protocol import (
    NO_ID,
    LineFramer,
    LineTooLong,
    PipeError,
    ProtocolError,
    RemoteError,
    decode_reply,
    encode_request,
    format_address,
)

__all__ = ["Client", "ConnectError", "ConnectionClosed", "PipeTimeout", "main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3000
DEFAULT_TIMEOUT = 5.0
# Replies can be longer than requests (JSON escaping), so the client accepts
# more than the server's default request limit.
DEFAULT_MAX_REPLY_BYTES = 16 * 1_048_576


class ConnectError(PipeError):
    """No connection could be made (nothing listening, unknown host, ...)."""


class PipeTimeout(PipeError):
    """Connecting or waiting for a reply took longer than the timeout."""


class ConnectionClosed(PipeError):
    """The server closed the connection before replying."""


class Client:
    """A connection to a pipe server; send a message, get its reply.

    Connects in the constructor. ``timeout`` (seconds) bounds connecting and
    each wait for a reply; after a timeout the connection is closed, since a
    late reply would otherwise be taken for the next one.

    Methods for the caller:
        ``send_text(text) -> str`` a plain-text message and its reply;
        ``request(op, **params) -> result`` a JSON request and its result;
        ``send_line(line) -> str`` one raw protocol line and the raw reply
        line; ``close()`` hang up (also on leaving a ``with`` block).
        Every failure raises a :class:`~spike.protocol.PipeError` subclass
        whose message names ``host:port``, except
        :class:`~spike.protocol.RemoteError`, which carries the server's own
        ``code`` and ``message``.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        timeout: float | None = DEFAULT_TIMEOUT,
        *,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self._where = format_address((host, port))
        self._framer = LineFramer(max_reply_bytes)
        self._lines: collections.deque[bytes] = collections.deque()
        self._next_id = 1
        self._send_failure: str | None = None  # why the last send broke off
        try:
            self._sock: socket.socket | None = socket.create_connection(
                (host, port), timeout=timeout
            )
        except TimeoutError:
            raise PipeTimeout(
                _connect_failure(host, port, f"timed out after {timeout} s")
            ) from None
        except ConnectionRefusedError:
            raise ConnectError(
                _connect_failure(host, port, "connection refused (is the server running?)")
            ) from None
        except socket.gaierror as exc:
            raise ConnectError(
                _connect_failure(host, port, f"unknown host ({exc.strerror})")
            ) from None
        except (OSError, OverflowError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ConnectError(_connect_failure(host, port, str(reason))) from None
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- public API ----------------------------------------------------------
    def send_line(self, line: str) -> str:
        """Send one raw protocol line (no newline inside); return the reply line."""
        if "\n" in line:
            raise ValueError("a message cannot contain a newline (each line is one message)")
        self._send(line.encode() + b"\n")
        return self._receive_line().decode(errors="replace")

    def send_text(self, text: str) -> str:
        """Send a plain-text message and return the server's reply text.

        A text starting with ``{`` is a JSON request on the wire; its raw
        reply line is returned. An error reply to plain text (say the line
        is too long) raises :class:`~spike.protocol.RemoteError`.
        """
        reply = self.send_line(text)
        if not text.startswith("{") and reply.startswith('{"'):
            # Plain text comes back as plain text; an error reply is JSON.
            try:
                parsed = decode_reply(reply.encode())
            except ProtocolError:
                return reply  # some other server's text that starts with {
            _raise_if_error(parsed)
        return reply

    def request(self, op: str, **params: Any) -> Any:
        """Send the JSON request ``op`` with ``params``; return its result.

        Raises :class:`~spike.protocol.RemoteError` for an ``ok: false``
        reply.
        """
        request_id = self._next_id
        self._next_id += 1
        self._send(encode_request(op, params, request_id))
        try:
            reply = decode_reply(self._receive_line())
        except ProtocolError as exc:
            raise ProtocolError(exc.code, f"reply from {self._where}: {exc.message}") from None
        _raise_if_error(reply)
        if reply.get("id") != request_id:
            self.close()
            raise ProtocolError(
                "bad_request",
                f"reply from {self._where} has id {reply.get('id')!r}, not the request's "
                f"{request_id}",
            )
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
    def _send(self, data: bytes) -> None:
        sock = self._require_socket()
        try:
            sock.sendall(data)
        except TimeoutError:
            self.close()
            raise PipeTimeout(
                f"sending to {self._where} timed out after {self.timeout} s"
            ) from None
        except OSError as exc:
            # A server that refuses a message (line_too_long) answers, then
            # hangs up while we are still sending. Its answer may already be
            # waiting to be read: the reply read that comes next reports it,
            # or this failure if there is none.
            self._send_failure = (
                f"connection to {self._where} lost while sending: {exc.strerror or exc}"
            )

    def _receive_line(self) -> bytes:
        lines = self._lines
        while not lines:
            sock = self._require_socket()
            try:
                data = sock.recv(65536)
            except TimeoutError:
                self.close()
                raise PipeTimeout(f"no reply from {self._where} within {self.timeout} s") from None
            except OSError as exc:
                self.close()
                raise ConnectionClosed(
                    self._send_failure
                    or f"connection to {self._where} lost: {exc.strerror or exc}"
                ) from None
            if not data:
                self.close()
                raise ConnectionClosed(
                    self._send_failure or f"{self._where} closed the connection without a reply"
                )
            try:
                lines.extend(self._framer.feed(data))
            except LineTooLong as exc:
                self.close()
                raise ProtocolError(exc.code, f"reply from {self._where}: {exc.message}") from None
        if self._send_failure is not None:
            self.close()  # the connection is broken; that reply was its last
        return lines.popleft()

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionClosed(f"the connection to {self._where} is closed")
        return self._sock


def _connect_failure(host: str, port: int, reason: str) -> str:
    """The one-line message for a failed connect to ``host:port``.

    Adds a hint when ``host`` is a wildcard address such as ``0.0.0.0`` or
    ``::``: a server's "Serving on 0.0.0.0:3000" means it listens on every
    interface, which is no address to connect to.
    """
    message = f"cannot connect to {format_address((host, port))}: {reason}"
    if _is_wildcard(host):
        message += (
            f'; {host} means "every interface" on the server side, not an address to '
            "connect to: use 127.0.0.1 (same machine) or the server's IP address"
        )
    return message


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:  # a name, not an address
        return False


def _raise_if_error(reply: dict[str, Any]) -> None:
    if not reply["ok"]:
        error = reply["error"]
        raise RemoteError(error["code"], error["message"], reply.get("id", NO_ID))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``spike-client`` and ``python -m spike.client``."""
    from .cli import client_main  # noqa: PLC0415  (cli imports this module)

    return client_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
