"""How an op runs: at once on the loop, in a worker thread, or on an asyncio loop.

Where each op runs was decided when it was registered
(:class:`~spike.ops.RunsOn`). This module holds the op-and-encode leg every
JSON request takes (:func:`run_op`: call the op, map what it raised to the
side at fault, encode the reply line; it never raises) and the two places
off the event loop where ops run:

* :class:`WorkerPool`, a bounded pool of daemon threads for plain ``def``
  ops. Daemon threads, unlike :class:`concurrent.futures.ThreadPoolExecutor`'s,
  cannot keep the process alive after Ctrl+C because an op hangs.
* :class:`AsyncLoop`, one asyncio event loop on a thread of its own, for
  ``async def`` ops; many are awaited at once, never a thread per request.

Every off-loop op ends in one :class:`concurrent.futures.Future`; the
server adds a done-callback that posts the :class:`Outcome` back to its
loop. Nothing here logs (the log has one writing thread, the loop's) or
knows about connections: it imports nothing of the server above it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import OP_FAILED
from ..ops import OpContext, OpSpec, Params, RunsOn, describe, op_error
from ..protocol import encode_error, encode_result

__all__ = [
    "PLAIN_RESULTS",
    "AsyncLoop",
    "Dispatcher",
    "Outcome",
    "WorkerPool",
    "failed_outcome",
    "finish_op",
    "run_op",
]


class Outcome(NamedTuple):
    """An answered request: its reply line, and what to log if the op failed."""

    data: bytes
    #: The op's exception when the reply is ``op_failed`` (the server logs it).
    failure: BaseException | None = None
    #: What went wrong, for the log: "" (the op raised) or how its result failed.
    what: str = ""


#: What ops usually return: JSON's own types (never awaitable).
PLAIN_RESULTS = frozenset({dict, list, str, int, float, bool, type(None)})


def run_op(spec: OpSpec, params: dict[str, Any], ctx: OpContext, request_id: Any) -> Outcome:
    """Run a plain op here and now, and encode its reply; never raises."""
    try:
        result = spec.func(Params(params), ctx)
    except BaseException as exc:  # untrusted code: even SystemExit is the op's
        return failed_outcome(spec.name, exc, request_id)
    return finish_op(spec.name, result, request_id)


def finish_op(name: str, result: Any, request_id: Any) -> Outcome:
    """The reply for what a plain op returned (an awaitable is refused); never raises."""
    # inspect.isawaitable() costs a fifth of a microsecond (an ABC check);
    # JSON's own types, what ops return, are never awaitable.
    if type(result) not in PLAIN_RESULTS and inspect.isawaitable(result):
        # A plain function that returned a coroutine (a decorator hid the
        # async def): it would never run. Say how to register it instead.
        if inspect.iscoroutine(result):
            result.close()
        error = TypeError(
            f"op {name!r} returned an awaitable; register the async def function "
            "itself so that the server awaits it"
        )
        return failed_outcome(name, error, request_id)
    return _encoded(name, result, request_id)


async def run_op_async(
    spec: OpSpec, params: dict[str, Any], ctx: OpContext, request_id: Any
) -> Outcome:
    """Await an ``async def`` op and encode its reply; raises only when cancelled."""
    try:
        result = await spec.func(Params(params), ctx)
    except asyncio.CancelledError:
        raise  # the server cancelled it (timed out, or stopping): no reply is wanted
    except BaseException as exc:
        return failed_outcome(spec.name, exc, request_id)
    return _encoded(spec.name, result, request_id)


def failed_outcome(name: str, exc: BaseException, request_id: Any) -> Outcome:
    """The reply for what op ``name`` raised: whose fault it is; never raises."""
    error = op_error(name, exc)
    failure = error.__cause__ if error.code == OP_FAILED else None
    return Outcome(encode_error(error.code, error.message, request_id, error.details), failure)


# An answered request's Outcome, built as NamedTuple._make() does: the
# generated __new__ (a Python function, for the defaults) cost an inline
# op a third of a microsecond on every request.
_tuple_new = tuple.__new__


def _encoded(name: str, result: Any, request_id: Any) -> Outcome:
    try:
        return _tuple_new(Outcome, (encode_result(result, request_id), None, ""))
    except BaseException as exc:  # not JSON, nested too deep (RecursionError), ...
        message = f"op {name!r} returned a result that cannot be sent as JSON: {describe(exc)}"
        failed = "returned a result that failed to encode"
        return Outcome(encode_error(OP_FAILED, message, request_id), exc, failed)


class WorkerPool:
    """At most ``size`` daemon threads running plain ``def`` ops, started as needed.

    ``busy`` and ``queued`` are read by ``stats``; a worker whose op timed
    out stays busy until the op returns (a thread cannot be stopped).

    Back-pressure on what goes out: a finished op's reply is counted as
    unclaimed until the loop takes it (:meth:`claimed`); while more than
    ``max_unclaimed`` bytes are, no worker starts another op. Workers can
    build replies faster than the loop can send them, and a reply the loop
    has not taken yet is outside the server's memory budget.
    """

    def __init__(
        self, size: int, max_unclaimed: int = 8 * 1024 * 1024, name: str = "spike-worker"
    ) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one thread")
        self.size = size
        self.max_unclaimed = max_unclaimed
        self._unclaimed = 0
        self._name = name
        self._jobs: collections.deque[
            tuple[concurrent.futures.Future[Outcome], Callable[[], Outcome]] | None
        ] = collections.deque()
        self._ready = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._returning = 0  # finished a job, not yet back for the next
        self.busy = 0
        self.thread_ids: set[int] = set()
        self._closed = False

    @property
    def queued(self) -> int:
        """Requests waiting for a free worker."""
        return len(self._jobs)

    @property
    def started(self) -> int:
        """Worker threads started so far (never more than ``size``)."""
        return len(self._threads)

    def submit(self, job: Callable[[], Outcome]) -> concurrent.futures.Future[Outcome]:
        """Run ``job`` on a worker; its future completes with the Outcome."""
        future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the worker pool is closed")
            self._jobs.append((future, job))
            if self._idle:
                self._ready.notify()
            # A worker that has just handed over a result (its reply may be
            # what made this job possible) takes the next job too: start a
            # thread only for jobs that no waiting or returning worker takes.
            free = self._idle + self._returning
            if len(self._jobs) > free and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads) + 1}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
        return future

    def claimed(self, nbytes: int) -> None:
        """The loop took a finished op's reply of ``nbytes``."""
        with self._ready:
            before = self._unclaimed
            self._unclaimed = before - nbytes
            if before > self.max_unclaimed >= self._unclaimed:
                self._ready.notify_all()

    def close(self) -> None:
        """Start no more jobs; queued ones are cancelled. Running ops go on
        (threads cannot be stopped) and their threads end when they return."""
        with self._ready:
            self._closed = True
            while self._jobs:
                item = self._jobs.popleft()
                if item is not None:
                    item[0].cancel()
            self._jobs.extend([None] * len(self._threads))
            self._ready.notify_all()

    def _work(self) -> None:
        self.thread_ids.add(threading.get_ident())
        jobs = self._jobs
        returning = False
        while True:
            with self._ready:
                if returning:
                    self._returning -= 1
                while not jobs or (self._unclaimed > self.max_unclaimed and not self._closed):
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                item = jobs.popleft()
                if item is None:
                    return
                self.busy += 1
            future, job = item
            outcome: Outcome | None = None
            failed: BaseException | None = None
            if future.set_running_or_notify_cancel():
                try:
                    outcome = job()
                except BaseException as exc:  # run_op never raises; if it ever does,
                    failed = exc  # the reply must still come back (as op_failed)
            with self._ready:  # before the loop can see the result
                if outcome is not None:
                    self._unclaimed += len(outcome.data)
                self.busy -= 1
                self._returning += 1
            returning = True
            if outcome is not None:
                future.set_result(outcome)
            elif failed is not None:
                future.set_exception(failed)


#: An async op waiting for the asyncio loop to start it.
_AsyncJob = tuple["concurrent.futures.Future[Outcome]", OpSpec, dict[str, Any], OpContext, Any]


class AsyncLoop:
    """One asyncio event loop on a daemon thread of its own, for ``async def`` ops.

    Ops are handed over in batches: :meth:`submit` queues the op and wakes
    the asyncio loop only if no batch is already on its way (as the server's
    own ``post`` does), so a burst of requests read in one turn costs one
    wake-up, not one per op as ``run_coroutine_threadsafe`` would.
    """

    def __init__(self, name: str = "spike-async") -> None:
        self._loop = asyncio.new_event_loop()
        self._incoming: collections.deque[_AsyncJob] = collections.deque()
        self._woken = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self.running = 0  # ops awaited right now

    @property
    def thread_id(self) -> int | None:
        return self._thread.ident

    def submit(
        self, spec: OpSpec, params: dict[str, Any], ctx: OpContext, request_id: Any
    ) -> concurrent.futures.Future[Outcome]:
        """Await the op on the loop; cancelling the future cancels the op."""
        future: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
        self._incoming.append((future, spec, params, ctx, request_id))
        if not self._woken:
            self._woken = True
            self._loop.call_soon_threadsafe(self._start_incoming)
        return future

    def _start_incoming(self) -> None:
        # Cleared before draining: a job queued after the drain's last look
        # saw the flag cleared and scheduled a batch of its own.
        self._woken = False
        incoming = self._incoming
        loop = self._loop
        while incoming:
            future, spec, params, ctx, request_id = incoming.popleft()
            if future.cancelled():  # timed out, or the server stopped, before it began
                continue
            task = loop.create_task(self._await(future, spec, params, ctx, request_id))
            future.add_done_callback(functools.partial(self._cancel_task, task))

    def _cancel_task(
        self, task: asyncio.Task[None], future: concurrent.futures.Future[Outcome]
    ) -> None:
        # On the thread that cancelled the future (the server's loop).
        if future.cancelled():
            with contextlib.suppress(RuntimeError):  # the asyncio loop is closed
                self._loop.call_soon_threadsafe(task.cancel)

    async def _await(
        self,
        future: concurrent.futures.Future[Outcome],
        spec: OpSpec,
        params: dict[str, Any],
        ctx: OpContext,
        request_id: Any,
    ) -> None:
        self.running += 1
        try:
            outcome = await run_op_async(spec, params, ctx, request_id)
        except asyncio.CancelledError:  # by the server, or by close(): no reply
            future.cancel()
            return
        finally:
            self.running -= 1
        # The server may cancel it at any moment (its deadline passed).
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            future.set_result(outcome)

    def close(self) -> None:
        """Cancel every op still awaited and stop the loop's thread."""
        with contextlib.suppress(RuntimeError):  # already closed
            self._loop.call_soon_threadsafe(self._stop)
        self._thread.join(timeout=1.0)

    def _stop(self) -> None:
        for task in asyncio.all_tasks(self._loop):
            task.cancel()
        self._loop.call_soon(self._loop.stop)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()


class Dispatcher:
    """Starts an op where it runs; ``done`` is called with its Outcome, from
    whichever thread it finished on (the server posts it to its loop).

    Methods for the caller: ``start`` (an op that does not run on the loop),
    ``stats``, ``off_loop_thread`` (is the calling thread one of ours?),
    ``close``. The asyncio loop starts with the first ``async def`` op.
    """

    def __init__(self, workers: int, max_unclaimed: int = 8 * 1024 * 1024) -> None:
        self.pool = WorkerPool(workers, max_unclaimed)
        self._async: AsyncLoop | None = None
        self._lock = threading.Lock()

    def start(
        self,
        spec: OpSpec,
        params: dict[str, Any],
        ctx: OpContext,
        request_id: Any,
        done: Callable[[concurrent.futures.Future[Outcome]], None],
    ) -> concurrent.futures.Future[Outcome]:
        if spec.runs_on is RunsOn.ASYNC:
            future = self._async_loop().submit(spec, params, ctx, request_id)
        else:
            future = self.pool.submit(lambda: run_op(spec, params, ctx, request_id))
        future.add_done_callback(done)
        return future

    def _async_loop(self) -> AsyncLoop:
        if self._async is None:
            with self._lock:
                if self._async is None:
                    self._async = AsyncLoop()
        return self._async

    def stats(self) -> dict[str, int]:
        """Workers (started, busy), requests waiting for a worker, async ops awaited."""
        return {
            "workers": self.pool.size,
            "workers_busy": self.pool.busy,
            "requests_queued": self.pool.queued,
            "async_ops_running": 0 if self._async is None else self._async.running,
        }

    def off_loop_thread(self) -> bool:
        """True when called from one of this dispatcher's threads (an op)."""
        ident = threading.get_ident()
        if ident in self.pool.thread_ids:
            return True
        return self._async is not None and ident == self._async.thread_id

    def close(self) -> None:
        self.pool.close()
        if self._async is not None:
            self._async.close()
