"""Ops: what a JSON request can ask the server to do.

An op is a function ``(params, ctx) -> result``. ``params`` holds the
request's keys other than ``"op"`` and ``"id"``; the result can be any JSON
value. ``ctx`` (an :class:`OpContext`) tells who asked: ``ctx.peer`` is the
client's ``(host, port)``, ``ctx.messages`` counts that connection's
messages so far and ``ctx.server`` offers ``uptime`` and ``stats()``. It is
a snapshot, safe to read from any thread.

Adding your own op takes a few lines::

    from spike import default_ops

    ops = default_ops.copy()

    @ops.op("add")
    def add(params, ctx):
        return {"sum": params["a"] + params["b"]}

and ``spike-server --ops my_service.py:ops`` serves it.

Where an op runs is decided once, when it is registered:

* a plain ``def`` op runs in the server's pool of worker threads
  (``spike-server --workers``), so an op that waits for a database, a web
  API or a file keeps no other client waiting;
* an ``async def`` op is awaited on an asyncio event loop that the server
  runs on a thread of its own, many at once;
* ``@ops.op(name, inline=True)`` runs on the server's event loop itself:
  only for quick ops that never wait (the built-in ``echo``, ``info`` and
  ``stats`` are inline).

Every op has a deadline (``spike-server --op-timeout``): past it the
caller gets ``op_timeout`` and any late result is dropped. An ``async def``
op is cancelled then; a thread cannot be stopped, so a ``def`` op keeps its
worker until it returns.

Who is at fault decides the error code:

* ``params`` is a :class:`Params`, a dict whose missing key raises
  :class:`MissingParameter` (a ``KeyError``): ``params["user"]`` when the
  request has no ``"user"`` is the caller's mistake, ``bad_request``
  (``missing parameter 'user'``).
* An op that refuses what it was given says so: ``raise BadRequest("...")``
  is ``bad_request`` with that message.
* Anything else the op raises (any exception, ``SystemExit`` and
  ``KeyboardInterrupt`` included) is a bug in the op: ``op_failed``, and
  the server logs one error line naming the op, the request id and the
  exception (``spike-server --tracebacks`` adds the traceback). So
  ``users[params["user"]]`` with an unknown user is ``op_failed``: the
  ``KeyError`` came from the op's own dict, and the op should have checked
  and raised ``BadRequest``.

Either way the server keeps serving.
"""

from __future__ import annotations

import asyncio
import datetime
import enum
import functools
import inspect
import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

from ._version import __version__
from .errors import BAD_REQUEST, OP_FAILED, UNKNOWN_OP, ProtocolError, as_text
from .protocol import AUTH_OP

__all__ = [
    "BadRequest",
    "MissingParameter",
    "OpContext",
    "OpFunction",
    "OpRegistry",
    "OpSpec",
    "Params",
    "RunsOn",
    "ServerView",
    "default_ops",
    "describe",
    "op_error",
]

F = TypeVar("F", bound=Callable[..., Any])


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


class OpContext(NamedTuple):
    """An op's ``ctx``: who asked, as it was when the request was read.

    Immutable, so an op may read it from any thread.
    """

    #: The client's address, ``(host, port)``.
    peer: tuple[Any, ...]
    #: Messages received on this connection so far, this request included.
    messages: int
    #: The server that received the request (``uptime``, ``stats()``).
    server: ServerView


OpFunction = Callable[[dict[str, Any], OpContext], Any]


class RunsOn(enum.Enum):
    """Where an op runs, decided when it is registered."""

    #: On the server's event loop, at once: quick ops that never wait.
    LOOP = "loop"
    #: In the server's pool of worker threads: a plain ``def`` op.
    WORKER = "worker"
    #: Awaited on the server's asyncio event loop: an ``async def`` op.
    ASYNC = "async"


@dataclass(frozen=True)
class OpSpec:
    """A registered op: its name, its function and where it runs."""

    name: str
    func: Callable[..., Any]
    runs_on: RunsOn


class OpRegistry:
    """Maps op names to functions, each with where it runs.

    Methods for the caller: ``op(name, inline=False)`` (a decorator) and
    ``add`` register an op; ``remove``, ``copy``, ``names``; ``get(name)``
    looks one up for the server; ``call`` runs a plain op at once (for
    tests and scripts), with the server's error mapping.
    """

    def __init__(self, ops: dict[str, OpFunction] | None = None) -> None:
        self._ops: dict[str, OpSpec] = {}
        for name, func in (ops or {}).items():
            self.add(name, func)

    def op(self, name: str, *, inline: bool = False) -> Callable[[F], F]:
        """Decorator: register the function as op ``name`` and return it unchanged.

        ``inline=True`` runs it on the server's event loop: only for an op
        that is quick and never waits (every other client waits meanwhile).
        """

        def register(func: F) -> F:
            self.add(name, func, inline=inline)
            return func

        return register

    def add(self, name: str, func: Callable[..., Any], *, inline: bool = False) -> None:
        """Register ``func`` as op ``name`` (replacing any op of that name).

        An ``async def`` function is awaited on the server's asyncio loop;
        any other callable runs in a worker thread, or on the event loop
        itself with ``inline=True``.
        """
        if not isinstance(name, str) or not name:
            raise ValueError("an op name must be a non-empty string")
        if name == AUTH_OP:
            raise ValueError(
                f"{AUTH_OP!r} is taken: the server answers it itself (a connection's token)"
            )
        if not callable(func):
            raise TypeError(f"op {name!r} must be callable")
        if _is_async(func):
            if inline:
                raise ValueError(
                    f"op {name!r} is an async def: it runs on the server's asyncio loop, "
                    "so inline=True does not apply"
                )
            runs_on = RunsOn.ASYNC
        else:
            runs_on = RunsOn.LOOP if inline else RunsOn.WORKER
        self._ops[name] = OpSpec(name, func, runs_on)

    def remove(self, name: str) -> None:
        """Unregister op ``name``; KeyError if there is none."""
        del self._ops[name]

    def copy(self) -> OpRegistry:
        """A new registry with the same ops, to extend without changing this one."""
        new = OpRegistry()
        new._ops = dict(self._ops)
        return new

    def finder(self) -> Callable[[str], OpSpec | None]:
        """A function from an op's name to its spec, or None: what the
        server's loop calls for every request (the registry's own dict
        lookup, so that no Python frame is added per request). Ops added
        or removed later are seen by it."""
        return self._ops.get

    def names(self) -> list[str]:
        """The registered op names, sorted."""
        return sorted(self._ops)

    def get(self, name: str) -> OpSpec:
        """The op registered as ``name``; ``unknown_op`` if there is none."""
        spec = self._ops.get(name)
        if spec is None:
            raise ProtocolError(UNKNOWN_OP, f"no op named {name!r}; try one of {self.names()}")
        return spec

    def runs_async(self) -> bool:
        """True if any op is an ``async def`` (the server then starts its asyncio loop)."""
        return any(spec.runs_on is RunsOn.ASYNC for spec in self._ops.values())

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"OpRegistry({self.names()!r})"

    def call(self, name: str, params: dict[str, Any], ctx: OpContext) -> Any:
        """Run op ``name`` at once, here, with ``params`` (as a :class:`Params`);
        failures become :class:`ProtocolError` (see :func:`op_error`).

        ``unknown_op`` if no such op. An ``async def`` op is run to
        completion with :func:`asyncio.run`. The server does not use this:
        it runs each op where it was registered to run.
        """
        spec = self.get(name)
        try:
            if spec.runs_on is RunsOn.ASYNC:
                return asyncio.run(spec.func(Params(params), ctx))
            return spec.func(Params(params), ctx)
        except BaseException as exc:
            error = op_error(name, exc)
            if error is exc:
                raise
            raise error from exc


def op_error(name: str, exc: BaseException) -> ProtocolError:
    """The error reply for what op ``name`` raised: whose fault it is.

    A :class:`ProtocolError` the op raised (:class:`BadRequest`) is itself;
    a :class:`MissingParameter` is ``bad_request``; anything else, any
    ``BaseException``, is ``op_failed`` (its ``__cause__`` is the op's
    exception, for the server's log). Never raises, even for an exception
    whose ``__str__`` does.
    """
    if isinstance(exc, ProtocolError):
        return exc
    if isinstance(exc, MissingParameter):
        error = ProtocolError(BAD_REQUEST, describe(exc, with_type=False))
    else:
        error = ProtocolError(OP_FAILED, f"op {name!r} failed: {describe(exc)}")
    error.__cause__ = exc
    return error


def describe(exc: BaseException, *, with_type: bool = True) -> str:
    """``Type: message`` for an exception, even one whose ``__str__`` fails."""
    kind = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # an op's exception is untrusted code too
        text = "(its message could not be read)"
    if not with_type:
        return text
    return f"{kind}: {text}" if text else kind


def _is_async(func: Callable[..., Any]) -> bool:
    """True for an ``async def`` function, also behind ``functools.partial``
    or as a callable object's ``async def __call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    if inspect.iscoroutinefunction(func):
        return True
    call = getattr(func, "__call__", None)  # noqa: B004 - the method itself is wanted
    return not inspect.isfunction(func) and inspect.iscoroutinefunction(call)


default_ops = OpRegistry()


@default_ops.op("echo", inline=True)
def echo(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """``{"op": "echo", "text": "..."}`` -> ``{"text": "..."}``."""
    text = params["text"]
    if not isinstance(text, str):
        raise BadRequest('"text" must be a string')
    return {"text": text}


@default_ops.op("info", inline=True)
def info(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Who is answering: server name and version, Python, UTC time, uptime."""
    return {
        "server": "spike",
        "version": __version__,
        "python": platform.python_version(),
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
        "uptime_seconds": round(ctx.server.uptime, 3),
    }


@default_ops.op("stats", inline=True)
def stats(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Connection statistics, server-wide and for the asking connection."""
    result: dict[str, Any] = ctx.server.stats()
    result["this_connection_messages"] = ctx.messages
    return result
