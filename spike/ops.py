"""Ops: what a JSON request can ask the server to do.

An op is a plain function ``(params: dict[str, Any], ctx) -> result``. ``params`` holds
the request's keys other than ``"op"`` and ``"id"``; the result can be any
JSON value. ``ctx`` (an :class:`OpContext`) is the connection that received
the request: ``ctx.peer`` is the client's ``(host, port)``, ``ctx.messages``
counts this connection's messages and ``ctx.server`` is the
:class:`~spike.server.Server`.

Adding your own op takes a few lines::

    from spike import default_ops, running_server

    ops = default_ops.copy()

    @ops.op("add")
    def add(params, ctx):
        return {"sum": params["a"] + params["b"]}

    with running_server(ops=ops) as server:
        ...

Who is at fault decides the error code:

* ``params`` is a :class:`Params`, a dict whose missing key raises
  :class:`MissingParameter` (a ``KeyError``): ``params["user"]`` when the
  request has no ``"user"`` is the caller's mistake, ``bad_request``
  (``missing parameter 'user'``).
* An op that refuses what it was given says so: ``raise BadRequest("...")``
  is ``bad_request`` with that message.
* Any other exception raised by the op's code, ``KeyError``, ``ValueError``
  and ``TypeError`` included, is a bug in the op: ``op_failed``, and the
  server logs one error line naming the op, the exception and the request
  id (``spike-server --tracebacks`` adds the traceback). So
  ``users[params["user"]]`` with an unknown user is ``op_failed``: the
  ``KeyError`` came from the op's own dict, and the op should have checked
  and raised ``BadRequest``.

Either way the server keeps serving. Ops run on the server's single
event-loop thread, so keep them quick: a slow op makes every client wait.
"""

from __future__ import annotations

import datetime
import platform
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from ._version import __version__
from .errors import BAD_REQUEST, OP_FAILED, UNKNOWN_OP, ProtocolError, as_text

__all__ = [
    "BadRequest",
    "MissingParameter",
    "OpContext",
    "OpFunction",
    "OpRegistry",
    "Params",
    "ServerView",
    "default_ops",
]


class MissingParameter(KeyError):
    """A request lacks a parameter its op reads: the caller's mistake, ``bad_request``.

    A ``KeyError``, so an op that catches ``KeyError`` to supply a default
    still works.
    """

    def __init__(self, name: object) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"missing parameter {self.name!r}"


class BadRequest(ProtocolError):
    """Raise it in an op for input the op refuses: the reply is
    ``bad_request`` with ``message``, and nothing is logged as a failure.

    ``message`` is text for people; anything else is sent as its text
    (``BadRequest(404)`` says ``"404"``). ``details``, any JSON value, goes
    to programs as the error's ``"details"``; a dict or list given as the
    message goes there too, as it is, so
    ``raise BadRequest({"name": "is required"})`` keeps its structure.
    """

    def __init__(self, message: object, details: Any = None) -> None:
        if details is None and isinstance(message, (dict, list)):
            details = message
        super().__init__(BAD_REQUEST, as_text(message), details=details)


_NOT_GIVEN: Any = object()


class Params(dict[str, Any]):
    """A request's parameters, as an op receives them: a dict whose missing
    key raises :class:`MissingParameter` instead of a plain ``KeyError``,
    so that a parameter the caller left out is told apart from a bug in the
    op (a ``KeyError`` from any other dict)."""

    __slots__ = ()

    def __missing__(self, key: str) -> Any:
        raise MissingParameter(key)

    def pop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        """``dict.pop``; a missing key without a default is a :class:`MissingParameter`."""
        if default is _NOT_GIVEN:
            if key not in self:
                raise MissingParameter(key)
            return super().pop(key)
        return super().pop(key, default)


class ServerView(Protocol):
    """What an op may ask of the server (a :class:`~spike.server.Server` is one)."""

    @property
    def uptime(self) -> float:
        """Seconds since the server was created."""
        ...

    def stats(self) -> dict[str, int]:
        """Connection statistics."""
        ...


class OpContext(Protocol):
    """An op's ``ctx``: the connection that received the request
    (a :class:`~spike.server.Connection` is one)."""

    @property
    def peer(self) -> tuple[Any, ...]:
        """The client's address, ``(host, port)``."""
        ...

    @property
    def messages(self) -> int:
        """Messages received on this connection so far."""
        ...

    @property
    def server(self) -> ServerView:
        """The server that accepted the connection."""
        ...


OpFunction = Callable[[dict[str, Any], OpContext], Any]


class OpRegistry:
    """Maps op names to functions; :meth:`call` runs one with error mapping."""

    def __init__(self, ops: dict[str, OpFunction] | None = None) -> None:
        self._ops: dict[str, OpFunction] = dict(ops or {})

    def op(self, name: str) -> Callable[[OpFunction], OpFunction]:
        """Decorator: register the function under ``name`` and return it."""

        def register(func: OpFunction) -> OpFunction:
            self.add(name, func)
            return func

        return register

    def add(self, name: str, func: OpFunction) -> None:
        """Register ``func`` as op ``name`` (replacing any op of that name)."""
        if not isinstance(name, str) or not name:
            raise ValueError("an op name must be a non-empty string")
        if not callable(func):
            raise TypeError(f"op {name!r} must be callable")
        self._ops[name] = func

    def remove(self, name: str) -> None:
        """Unregister op ``name``; KeyError if there is none."""
        del self._ops[name]

    def copy(self) -> OpRegistry:
        """A new registry with the same ops, to extend without changing this one."""
        return OpRegistry(self._ops)

    def names(self) -> list[str]:
        """The registered op names, sorted."""
        return sorted(self._ops)

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"OpRegistry({self.names()!r})"

    def call(self, name: str, params: dict[str, Any], ctx: OpContext) -> Any:
        """Run op ``name`` with ``params`` (as a :class:`Params`); failures
        become :class:`ProtocolError`.

        ``unknown_op`` if no such op; ``bad_request`` for a
        :class:`MissingParameter` or a :class:`ProtocolError` the op raised
        (:class:`BadRequest`); ``op_failed`` for any other exception, whose
        ``__cause__`` is the op's exception, for the server's log.
        """
        func = self._ops.get(name)
        if func is None:
            raise ProtocolError(UNKNOWN_OP, f"no op named {name!r}; try one of {self.names()}")
        try:
            return func(Params(params), ctx)
        except ProtocolError:
            raise
        except MissingParameter as exc:
            raise ProtocolError(BAD_REQUEST, str(exc)) from exc
        except Exception as exc:
            raise ProtocolError(
                OP_FAILED, f"op {name!r} failed: {type(exc).__name__}: {exc}"
            ) from exc


default_ops = OpRegistry()


@default_ops.op("echo")
def echo(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """``{"op": "echo", "text": "..."}`` -> ``{"text": "..."}``."""
    text = params["text"]
    if not isinstance(text, str):
        raise BadRequest('"text" must be a string')
    return {"text": text}


@default_ops.op("info")
def info(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Who is answering: server name and version, Python, UTC time, uptime."""
    return {
        "server": "spike",
        "version": __version__,
        "python": platform.python_version(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "uptime_seconds": round(ctx.server.uptime, 3),
    }


@default_ops.op("stats")
def stats(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Connection statistics, server-wide and for the asking connection."""
    result: dict[str, Any] = ctx.server.stats()
    result["this_connection_messages"] = ctx.messages
    return result
