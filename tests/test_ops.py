"""The op registry and the default ops, through a real server where they need one."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path
from typing import Any

import pytest

import spike
from spike import Client, OpRegistry, RemoteError, default_ops, running_server
from spike.protocol import ProtocolError

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
        (ValueError("n must be positive"), "bad_request"),
        (TypeError("n must be a number"), "bad_request"),
        (KeyError("n"), "bad_request"),
        (ZeroDivisionError("division by zero"), "op_failed"),
        (RuntimeError("boom"), "op_failed"),
    ],
)
def test_exceptions_become_error_codes(exc: BaseException, code: str) -> None:
    registry = OpRegistry({"op": _raises(exc)})
    with pytest.raises(ProtocolError) as caught:
        registry.call("op", {}, NO_CONTEXT)
    assert caught.value.code == code
    assert caught.value.__cause__ is exc


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
    assert caught.value.code == "bad_request"


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
            client.request("add", a=2, b="x")
        assert caught.value.code == "bad_request"
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
    assert "What an op sees as its ``ctx``" in (spike.Connection.__doc__ or "")
