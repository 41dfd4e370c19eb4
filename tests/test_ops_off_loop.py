"""Ops that do real work: worker threads, async ops, deadlines, replies in order.

Each test runs a real server on a free port and talks to it over real
sockets; the ops wait with real sleeps (a stand-in for a database or web
call), kept short so the file runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Any

import pytest
from helpers import WAIT, LineReader, LogCapture, Serve, connect, wait_until

from spike import BadRequest, Client, OpRegistry, RemoteError, default_ops, running_server
from spike.ops import OpContext, RunsOn


def slow_ops() -> OpRegistry:
    """Ops that wait in each of the three places an op can run."""
    ops = default_ops.copy()

    @ops.op("sleep")
    def sleep(params: Any, ctx: OpContext) -> dict[str, Any]:
        time.sleep(params["seconds"])
        return {"slept": params["seconds"]}

    @ops.op("asleep")
    async def asleep(params: Any, ctx: OpContext) -> dict[str, Any]:
        await asyncio.sleep(params["seconds"])
        return {"slept": params["seconds"]}

    @ops.op("fast")
    def fast(params: Any, ctx: OpContext) -> str:
        return "fast"

    return ops


def ask(client: Client, op: str, **params: Any) -> dict[str, Any]:
    """The reply as a dict: ``{"result": ...}`` or ``{"error": {"code", "message"}}``."""
    try:
        return {"result": client.request(op, **params)}
    except RemoteError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}


def request(op: str, request_id: Any = None, **params: Any) -> bytes:
    body: dict[str, Any] = {"op": op, **params}
    if request_id is not None:
        body["id"] = request_id
    return json.dumps(body).encode() + b"\n"


def test_where_an_op_runs_is_decided_at_registration() -> None:
    ops = slow_ops()
    assert ops.get("sleep").runs_on is RunsOn.WORKER
    assert ops.get("asleep").runs_on is RunsOn.ASYNC
    for builtin in ("echo", "info", "stats"):
        assert ops.get(builtin).runs_on is RunsOn.LOOP
    with pytest.raises(ValueError, match="async def"):
        ops.add("bad", slow_ops().get("asleep").func, inline=True)


def test_slow_def_ops_wait_in_parallel_and_an_echo_does_not_wait(serve: Serve) -> None:
    """The issue's measurement: 10 clients call an op that sleeps 0.5 s. Before:
    the last reply came after 5.0 s and an 11th client's echo waited 4.95 s."""
    with serve(port=0, ops=slow_ops()) as server:
        socks = [connect(server.address) for _ in range(10)]
        started = time.monotonic()
        for sock in socks:
            sock.sendall(request("sleep", seconds=0.5))
        time.sleep(0.05)
        with connect(server.address) as other:
            echo_started = time.monotonic()
            other.sendall(b"A message from CS361\n")
            assert LineReader(other).line() == b"A message from CS361"
            echo_took = time.monotonic() - echo_started
        for sock in socks:
            assert json.loads(LineReader(sock).line())["result"] == {"slept": 0.5}
            sock.close()
        took = time.monotonic() - started
    assert echo_took < 0.2, f"the echo waited {echo_took:.2f} s behind slow ops"
    assert took < 1.5, f"10 parallel 0.5 s ops took {took:.2f} s"


@pytest.mark.many_sockets
def test_a_thousand_async_ops_are_awaited_at_once(serve: Serve) -> None:
    """1,000 connections call an op that awaits asyncio.sleep(0.1): one
    asyncio loop awaits them all, no thread per request."""
    threads_before = threading.active_count()
    with serve(port=0, ops=slow_ops()) as server:
        socks = [connect(server.address) for _ in range(1000)]
        try:
            line = request("asleep", seconds=0.1)
            started = time.monotonic()
            for sock in socks:
                sock.sendall(line)
            for sock in socks:
                assert json.loads(LineReader(sock).line())["ok"] is True
            took = time.monotonic() - started
            # The server's loop, its asyncio thread, and no worker at all.
            assert threading.active_count() <= threads_before + 2
        finally:
            for sock in socks:
                sock.close()
    assert took < 1.0, f"1,000 async ops of 0.1 s took {took:.2f} s"


def test_replies_keep_request_order_whatever_order_ops_finish_in(serve: Serve) -> None:
    """A slow request, then a fast one, an inline one, an error and plain text,
    pipelined: the replies come back in the order the lines were sent."""
    with serve(port=0, ops=slow_ops()) as server, connect(server.address) as sock:
        sock.sendall(
            request("sleep", 1, seconds=0.3)
            + request("asleep", 2, seconds=0.1)
            + request("fast", 3)
            + request("echo", 4, text="inline")
            + b"{not json\n"
            + b"plain text\n"
            + request("sleep", 5, seconds=0.0)
        )
        reader = LineReader(sock)
        replies = [reader.line() for _ in range(7)]
    ids = [json.loads(line).get("id") for line in replies if line.startswith(b"{")]
    assert ids == [1, 2, 3, 4, None, 5]
    assert replies[5] == b"plain text"


def test_pipelined_slow_requests_are_capped_per_connection_and_start_no_threads() -> None:
    """2,000 pipelined slow requests from one client: at most max_in_flight
    run at once, no more worker threads than that start, every one answered in order."""
    before = {thread.ident for thread in threading.enumerate()}
    peak = {"in_flight": 0, "workers": 0}

    def new_workers() -> list[str]:
        return [
            thread.name
            for thread in threading.enumerate()
            if thread.ident not in before and thread.name.startswith("spike-worker")
        ]

    with (
        running_server(port=0, ops=slow_ops(), workers=8, max_in_flight=4) as server,
        connect(server.address, timeout=30) as sock,
    ):
        sender = threading.Thread(
            target=sock.sendall,
            args=(b"".join(request("sleep", n, seconds=0.001) for n in range(2000)),),
        )
        sender.start()
        reader = LineReader(sock)
        for n in range(2000):
            stats = server.stats()
            peak["in_flight"] = max(peak["in_flight"], stats["ops_in_flight"])
            peak["workers"] = max(peak["workers"], len(new_workers()))
            assert json.loads(reader.line())["id"] == n
        sender.join(WAIT)
        started = new_workers()
    assert peak["in_flight"] <= 4
    # Four ops at a time need at most four threads of the pool of eight.
    assert peak["workers"] <= 4, started


def test_an_op_past_its_deadline_gets_op_timeout_and_the_connection_goes_on(
    serve: Serve,
) -> None:
    log = LogCapture()
    ops = slow_ops()
    cancelled = threading.Event()

    @ops.op("hang_async")
    async def hang_async(params: Any, ctx: OpContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with (
        serve(port=0, ops=ops, op_timeout=0.3, log=log) as server,
        Client(*server.address, timeout=WAIT) as client,
    ):
        for op in ("sleep", "hang_async"):
            started = time.monotonic()
            reply = ask(client, op, seconds=1.0)
            took = time.monotonic() - started
            assert reply["error"]["code"] == "op_timeout", reply
            assert 0.25 < took < 0.9, f"{op}: answered after {took:.2f} s"
            assert client.request("echo", text="still here") == {"text": "still here"}
        assert cancelled.wait(WAIT), "the timed-out async op was not cancelled"
        stats = server.stats()
        assert stats["op_timeouts"] == 2
        assert stats["workers_busy"] == 1  # the sleeping thread cannot be stopped
        line = log.wait_for(lambda line: "past its deadline" in line)
        assert "op 'sleep'" in line and "its result was dropped" in line
        wait_until(lambda: server.stats()["workers_busy"] == 0, what="the worker came back")


@pytest.mark.parametrize("where", ["inline", "worker", "async"])
def test_whatever_an_op_raises_is_one_op_failed_reply(where: str, serve: Serve) -> None:
    """SystemExit, KeyboardInterrupt, GeneratorExit and an exception whose
    __str__ fails: each is one op_failed reply and one log line; the server
    keeps serving. Before, a BaseException killed the loop."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    raised: list[BaseException] = [
        SystemExit(3),
        KeyboardInterrupt(),
        GeneratorExit(),
        Unprintable(),
        ZeroDivisionError("boom"),
    ]
    ops = default_ops.copy()
    for n, exc in enumerate(raised):

        def fail(params: Any, ctx: OpContext, exc: BaseException = exc) -> None:
            raise exc

        async def afail(params: Any, ctx: OpContext, exc: BaseException = exc) -> None:
            raise exc

        ops.add(f"fail{n}", afail if where == "async" else fail, inline=where == "inline")
    log = LogCapture()
    with serve(port=0, ops=ops, error_log=log) as server, connect(server.address) as sock:
        reader = LineReader(sock)
        for n, exc in enumerate(raised):
            sock.sendall(request(f"fail{n}", n))
            reply = json.loads(reader.line())
            assert reply["id"] == n and reply["error"]["code"] == "op_failed", reply
            assert type(exc).__name__ in reply["error"]["message"]
            logged = f"op 'fail{n}' failed (request id {n})"
            log.wait_for(lambda line, logged=logged: logged in line)  # type: ignore[misc]
        sock.sendall(b"still serving\n")
        assert reader.line() == b"still serving"


@pytest.mark.parametrize("op", ["sleep", "asleep"])
def test_caller_mistakes_are_bad_request_wherever_the_op_runs(op: str) -> None:
    ops = slow_ops()

    @ops.op("refuse")
    async def refuse(params: Any, ctx: OpContext) -> None:
        raise BadRequest("no thanks")

    log = LogCapture()
    with (
        running_server(port=0, ops=ops, error_log=log) as server,
        Client(*server.address, timeout=WAIT) as client,
    ):
        assert ask(client, op)["error"] == {
            "code": "bad_request",
            "message": "missing parameter 'seconds'",
        }
        assert ask(client, "refuse")["error"]["code"] == "bad_request"
    assert not [line for line in log.lines if "Error" in line]


def test_a_client_that_leaves_mid_op_costs_nothing_and_its_reply_reaches_no_one() -> None:
    """Client A leaves while its op runs; B connects (most likely on the same
    file descriptor) and must never see A's reply."""
    log = LogCapture()
    with running_server(port=0, ops=slow_ops(), log=log) as server:
        for _ in range(20):
            with connect(server.address) as a:
                a.sendall(request("sleep", "for A", seconds=0.2))
                time.sleep(0.01)
        wait_until(lambda: server.open_connections == 0, what="A's connections closed")
        with connect(server.address) as b:
            b.sendall(b"B's line\n")
            reader = LineReader(b)
            assert reader.line() == b"B's line"
            wait_until(lambda: server.stats()["workers_busy"] == 0, what="A's ops ended")
            time.sleep(0.05)
            b.setblocking(False)
            with pytest.raises(BlockingIOError):
                b.recv(1)  # nothing more: no stray reply
        assert server.stats()["ops_in_flight"] == 0
    assert not [line for line in log.lines if line.startswith("Error")]


def test_a_client_that_half_closes_after_its_request_still_gets_the_reply(serve: Serve) -> None:
    with serve(port=0, ops=slow_ops()) as server, connect(server.address) as sock:
        sock.sendall(request("sleep", 1, seconds=0.2) + b"then this\n")
        sock.shutdown(socket.SHUT_WR)
        reader = LineReader(sock)
        assert json.loads(reader.line())["id"] == 1
        assert reader.line() == b"then this"
        assert reader.closed_by_peer()


def test_a_client_waiting_on_its_op_is_not_idle() -> None:
    """With idle_timeout 0.3 s, an op of 0.6 s: the client is answered, and
    the connection is still open for its next request."""
    with (
        running_server(port=0, ops=slow_ops(), idle_timeout=0.3, poll_interval=0.05) as server,
        Client(*server.address, timeout=WAIT) as client,
    ):
        assert client.request("sleep", seconds=0.6) == {"slept": 0.6}
        assert client.request("echo", text="again") == {"text": "again"}


def test_stopping_waits_for_ops_in_flight_and_names_those_it_cannot() -> None:
    log = LogCapture()
    with connect_later() as late:
        with running_server(port=0, ops=slow_ops(), error_log=log) as server:
            sock = late(server.address)
            sock.sendall(request("sleep", 1, seconds=0.3) + request("sleep", 2, seconds=10))
            time.sleep(0.05)
            started = time.monotonic()
        took = time.monotonic() - started
        reader = LineReader(sock)
        assert json.loads(reader.line())["id"] == 1  # finished within the drain
        assert reader.closed_by_peer()
    assert took < 3.0, f"stopping took {took:.2f} s"
    stopped = [line for line in log.lines if "still running" in line]
    assert len(stopped) == 1 and "'sleep'" in stopped[0], log.lines


class connect_later:
    """Sockets opened inside the block, closed when it ends."""

    def __enter__(self) -> Any:
        self.socks: list[socket.socket] = []

        def open_one(address: tuple) -> socket.socket:
            sock = connect(address)
            self.socks.append(sock)
            return sock

        return open_one

    def __exit__(self, *exc: object) -> None:
        for sock in self.socks:
            sock.close()


def test_ctx_is_a_snapshot_an_op_may_read_from_any_thread() -> None:
    ops = default_ops.copy()

    @ops.op("whoami")
    def whoami(params: Any, ctx: OpContext) -> dict[str, Any]:
        with pytest.raises(AttributeError):
            ctx.messages = 0  # type: ignore[misc]
        return {
            "thread": threading.current_thread().name,
            "messages": ctx.messages,
            "stats": ctx.server.stats(),
        }

    with (
        running_server(port=0, ops=ops) as server,
        Client(*server.address, timeout=WAIT) as client,
    ):
        client.send_text("one")
        result = client.request("whoami")
    assert result["thread"].startswith("spike-worker")
    assert result["messages"] == 2
    assert result["stats"]["ops_in_flight"] == 1
    assert result["stats"]["workers_busy"] == 1


def test_shutdown_from_inside_an_op_does_not_deadlock() -> None:
    """An op in a worker stops the server: shutdown() returns at once (waiting
    would deadlock: a stopping server waits for that op), the loop stops, and
    closing the server still delivers the op's reply."""
    ops = default_ops.copy()
    holder: dict[str, Any] = {}

    @ops.op("stop")
    def stop(params: Any, ctx: OpContext) -> str:
        holder["server"].shutdown()
        return "stopping"

    with connect_later() as late:
        with running_server(port=0, ops=ops) as server:
            holder["server"] = server
            sock = late(server.address)
            sock.sendall(request("stop", 1))
            wait_until(lambda: not server.wait_serving(0), what="the loop stopped")
        reply = LineReader(sock).line()
    assert json.loads(reply) == {"id": 1, "ok": True, "result": "stopping"}


def test_ops_registered_with_a_partial_or_a_callable_object_run_where_expected() -> None:
    import functools

    class Service:
        async def __call__(self, params: Any, ctx: OpContext) -> str:
            return "object"

    async def greet(greeting: str, params: Any, ctx: OpContext) -> str:
        return greeting

    ops = OpRegistry()
    ops.add("object", Service())
    ops.add("partial", functools.partial(greet, "hi"))
    assert ops.get("object").runs_on is RunsOn.ASYNC
    assert ops.get("partial").runs_on is RunsOn.ASYNC
    with (
        running_server(port=0, ops=ops) as server,
        Client(*server.address, timeout=WAIT) as client,
    ):
        assert client.request("object") == "object"
        assert client.request("partial") == "hi"


def test_a_def_op_that_returns_a_coroutine_says_how_to_register_it() -> None:
    ops = default_ops.copy()

    async def real(params: Any, ctx: OpContext) -> str:
        return "never"

    def hidden(params: Any, ctx: OpContext) -> Any:  # a def that returns a coroutine
        return real(params, ctx)

    ops.add("hidden", hidden)
    ops.add("hidden_inline", hidden, inline=True)  # on the loop: the same check
    log = LogCapture()
    with (
        running_server(port=0, ops=ops, error_log=log) as server,
        Client(*server.address, timeout=WAIT) as client,
    ):
        replies = [ask(client, "hidden"), ask(client, "hidden_inline")]
    for reply in replies:
        assert reply["error"]["code"] == "op_failed"
        assert "register the async def function itself" in reply["error"]["message"]


def test_async_ops_handed_over_in_a_batch_can_each_be_cancelled() -> None:
    """The asyncio loop takes ops in batches: an op cancelled before its
    batch starts never runs, one cancelled while awaited is cancelled, and
    none is left behind either way (whatever the moment of cancelling)."""
    from spike.ops import OpSpec
    from spike.server._dispatch import AsyncLoop

    began: list[int] = []
    cancelled: list[int] = []
    never = asyncio.Event()

    async def hang(params: Any, ctx: OpContext) -> None:
        began.append(params["n"])
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(params["n"])
            raise

    spec = OpSpec("hang", hang, RunsOn.ASYNC)
    ctx = OpContext(("127.0.0.1", 1), 1, None)  # type: ignore[arg-type]  # no server here
    loop = AsyncLoop()
    try:
        futures = [loop.submit(spec, {"n": n}, ctx, n) for n in range(300)]
        for n, future in enumerate(futures):
            if n % 2 == 0:  # half at once, most before their batch starts
                assert future.cancel()
        odd = list(range(1, 300, 2))
        wait_until(lambda: loop.running == 150 and began[-1:] == [299], what="the rest awaited")
        # The odd ones began in order; an even one only if its batch started
        # before it was cancelled, and then it was cancelled while awaited.
        assert [n for n in began if n % 2] == odd
        assert sorted(n for n in began if n % 2 == 0) == sorted(cancelled)
        for future in futures:
            future.cancel()
        wait_until(lambda: loop.running == 0, what="every awaited op cancelled")
        assert sorted(cancelled) == sorted(began)
        assert all(future.cancelled() for future in futures)
    finally:
        loop.close()
