"""The op registry and the default ops, through a real server where they need one."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import LogCapture

import spike
from spike import BadRequest, Client, OpRegistry, RemoteError, default_ops, running_server
from spike.errors import ProtocolError
from spike.ops import MissingParameter
from spike.server import DEFAULT_WORKERS

ROOT = Path(__file__).resolve().parent.parent

# These ops never look at their context.
NO_CONTEXT: Any = None


def test_default_ops() -> None:
    assert default_ops.names() == ["echo", "info", "stats"]
    assert "echo" in default_ops and "nope" not in default_ops


def test_decorator_registers_and_returns_the_function() -> None:
    registry = OpRegistry()

    @registry.op("double")
    def double(params, ctx):
        return params["n"] * 2

    assert double({"n": 2}, NO_CONTEXT) == 4
    assert registry.call("double", {"n": 21}, NO_CONTEXT) == 42
    assert list(registry) == ["double"] and len(registry) == 1


def test_copy_is_independent() -> None:
    mine = default_ops.copy()
    mine.op("mine")(lambda params, ctx: "yes")
    assert "mine" in mine and "mine" not in default_ops
    mine.remove("echo")
    assert "echo" in default_ops


def test_names_and_functions_are_checked() -> None:
    registry = OpRegistry()
    with pytest.raises(ValueError):
        registry.add("", lambda p, c: None)
    with pytest.raises(TypeError):
        registry.add("x", "not callable")  # type: ignore[arg-type]


def _raises(exc: BaseException):
    def op(params, ctx):
        raise exc

    return op


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        # The op's own code failed: its bug, whatever the exception's type.
        (ValueError("n must be positive"), "op_failed"),
        (TypeError("n must be a number"), "op_failed"),
        (KeyError("n"), "op_failed"),
        (ZeroDivisionError("division by zero"), "op_failed"),
        (RuntimeError("boom"), "op_failed"),
        # The caller's mistake.
        (MissingParameter("n"), "bad_request"),
    ],
)
def test_exceptions_become_error_codes(exc: BaseException, code: str) -> None:
    registry = OpRegistry({"op": _raises(exc)})
    with pytest.raises(ProtocolError) as caught:
        registry.call("op", {}, NO_CONTEXT)
    assert caught.value.code == code
    assert caught.value.__cause__ is exc


def test_an_op_refuses_input_with_bad_request() -> None:
    registry = OpRegistry({"op": _raises(BadRequest('"n" must be positive'))})
    with pytest.raises(ProtocolError) as caught:
        registry.call("op", {}, NO_CONTEXT)
    assert (caught.value.code, caught.value.message) == ("bad_request", '"n" must be positive')
    assert caught.value.__cause__ is None  # nothing for the server to log


def _lookup_user(params, ctx):
    users = {"alice": 1}
    return users[params["user"]]


def test_a_key_error_in_the_op_is_op_failed_a_missing_parameter_is_bad_request() -> None:
    registry = OpRegistry({"user": _lookup_user})
    assert registry.call("user", {"user": "alice"}, NO_CONTEXT) == 1
    with pytest.raises(ProtocolError) as caught:
        registry.call("user", {"user": "bob"}, NO_CONTEXT)
    assert caught.value.code == "op_failed"
    assert type(caught.value.__cause__) is KeyError
    assert caught.value.message == "op 'user' failed: KeyError: 'bob'"
    with pytest.raises(ProtocolError) as caught:
        registry.call("user", {}, NO_CONTEXT)
    assert (caught.value.code, caught.value.message) == ("bad_request", "missing parameter 'user'")


def test_params_is_a_dict_that_names_a_missing_parameter() -> None:
    seen = {}

    def op(params, ctx):
        seen["params"] = params
        return [params.get("absent", "default"), params.pop("absent", None)]

    assert OpRegistry({"op": op}).call("op", {"a": 1}, NO_CONTEXT) == ["default", None]
    params = seen["params"]
    assert isinstance(params, dict) and params == {"a": 1}
    with pytest.raises(KeyError) as caught:  # still a KeyError for an op that catches one
        params.pop("absent")
    assert type(caught.value) is MissingParameter
    assert str(caught.value) == "missing parameter 'absent'"


def test_an_op_bug_is_op_failed_and_logged_a_missing_parameter_is_not() -> None:
    """Over the wire: the reply blames the right side, and the server's log
    names the op, the exception and the request id only for the op's bug."""
    ops = default_ops.copy()
    ops.add("user", _lookup_user)
    log = LogCapture()
    with running_server(port=0, ops=ops, log=log) as server, Client(*server.address) as client:
        assert client.request("user", user="alice") == 1
        with pytest.raises(RemoteError) as caught:
            client.request("user", user="bob")  # request id 2
        assert caught.value.code == "op_failed"
        with pytest.raises(RemoteError) as caught:
            client.request("user")
        assert (caught.value.code, caught.value.message) == (
            "bad_request",
            "missing parameter 'user'",
        )
        assert client.request("echo", text="still here") == {"text": "still here"}
    errors = [line for line in log.lines if line.startswith("Error: ")]
    assert len(errors) == 1, log.lines
    assert errors[0].endswith(": op 'user' failed (request id 2): KeyError: 'bob'"), errors


def test_missing_parameter_is_named() -> None:
    with pytest.raises(ProtocolError) as caught:
        default_ops.call("echo", {}, NO_CONTEXT)
    assert caught.value.code == "bad_request"
    assert "'text'" in caught.value.message


def test_unknown_op_lists_the_known_ones() -> None:
    with pytest.raises(ProtocolError) as caught:
        default_ops.call("nope", {}, NO_CONTEXT)
    assert caught.value.code == "unknown_op"
    assert "echo" in caught.value.message


def test_echo_checks_its_text() -> None:
    assert default_ops.call("echo", {"text": "hi"}, NO_CONTEXT) == {"text": "hi"}
    with pytest.raises(ProtocolError) as caught:
        default_ops.call("echo", {"text": 5}, NO_CONTEXT)
    assert (caught.value.code, caught.value.message) == ("bad_request", '"text" must be a string')


def test_info_and_stats_over_the_wire() -> None:
    with running_server(port=0) as server, Client(*server.address) as client:
        before = datetime.datetime.now(datetime.timezone.utc)
        info = client.request("info")
        assert set(info) == {"server", "version", "python", "time", "uptime_seconds"}
        assert info["server"] == "spike"
        assert info["version"] == spike.__version__
        assert info["python"] == platform.python_version()
        stamp = datetime.datetime.fromisoformat(info["time"])
        assert stamp.utcoffset() == datetime.timedelta(0)
        assert abs((stamp - before).total_seconds()) < 5
        assert 0 <= info["uptime_seconds"] < 60

        client.send_text("one")
        with Client(*server.address) as other:
            other.send_text("two")
            stats = client.request("stats")
        assert stats == {
            "open_connections": 2,
            "total_connections": 2,
            "total_messages": 4,  # info, one, two, stats
            "this_connection_messages": 3,
            "ops_in_flight": 0,
            "op_timeouts": 0,
            "workers": DEFAULT_WORKERS,
            "workers_busy": 0,
            "requests_queued": 0,
            "async_ops_running": 0,
        }


def test_a_student_adds_an_op_in_a_few_lines() -> None:
    ops = default_ops.copy()

    @ops.op("add")
    def add(params, ctx):
        return {"sum": params["a"] + params["b"]}

    with running_server(port=0, ops=ops) as server, Client(*server.address) as client:
        assert client.request("add", a=2, b=3) == {"sum": 5}
        with pytest.raises(RemoteError) as caught:
            client.request("add", a=2)
        assert caught.value.code == "bad_request"
        with pytest.raises(RemoteError) as caught:
            client.request("add", a=2, b="x")  # the op does not check its input: its bug
        assert caught.value.code == "op_failed"
        assert client.request("echo", text="still here") == {"text": "still here"}


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in 3.11")
def test_version_matches_pyproject() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert spike.__version__ == project["version"]


def test_public_api_is_documented() -> None:
    """Everything in ``spike.__all__`` imports and has a docstring; the
    classes a student builds on say which methods are theirs to call."""
    for name in spike.__all__:
        value = getattr(spike, name)
        if callable(value):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"
    for cls in (spike.Server, spike.Client, spike.Connection):
        assert "Methods for the caller" in (cls.__doc__ or ""), cls.__name__
    assert "An op never sees the connection" in (spike.Connection.__doc__ or "")


def test_finder_sees_ops_added_and_removed_after_it_was_made() -> None:
    ops = default_ops.copy()
    find = ops.finder()
    assert find("nope") is None
    ops.add("later", lambda params, ctx: "later")
    spec = find("later")
    assert spec is not None and spec.name == "later"
    ops.remove("later")
    assert find("later") is None
    assert default_ops.finder()("later") is None  # the copy's ops are its own
