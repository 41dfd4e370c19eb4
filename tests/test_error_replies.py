"""An error reply is always a protocol reply: whatever an op passes to
BadRequest (or to a ProtocolError of its own), the wire carries a string
code and message that the project's own Client reads, on real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import LineReader, LogCapture, connect
from peers import Peers

from spike import BadRequest, Client, OpRegistry, RemoteError, running_server
from spike.errors import ProtocolError
from spike.protocol import encode_error


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


RAISED: dict[str, BaseException] = {
    "dict": BadRequest({"name": "is required"}),
    "int": BadRequest(404),
    "none": BadRequest(None),
    "unprintable": BadRequest(Unprintable()),
    "coded": ProtocolError(404, {"why": "not found"}),  # type: ignore[arg-type]
}


@pytest.fixture
def log() -> LogCapture:
    return LogCapture()


@pytest.fixture
def address(log: LogCapture) -> Iterator[tuple[str, int]]:
    ops = OpRegistry()

    @ops.op("refuse")
    def refuse(params: dict[str, Any], ctx: Any) -> Any:
        raise RAISED[params["how"]]

    @ops.op("echo")
    def echo(params: dict[str, Any], ctx: Any) -> Any:
        return params["text"]

    with running_server(port=0, ops=ops, log=log) as server:
        yield server.address


@pytest.mark.parametrize(
    ("how", "code", "message"),
    [
        ("int", "bad_request", "404"),
        ("dict", "bad_request", "{'name': 'is required'}"),
        ("none", "bad_request", "None"),
        ("unprintable", "bad_request", "<Unprintable that cannot be shown as text>"),
        ("coded", "404", "{'why': 'not found'}"),
    ],
)
def test_the_client_reads_the_error_whatever_the_op_raised(
    address: tuple[str, int], log: LogCapture, how: str, code: str, message: str
) -> None:
    """Before: BadRequest(404) went out as "message": 404, and the Client
    called the reply "not a pipe reply" and hung up."""
    with Client(*address) as client:
        with pytest.raises(RemoteError) as caught:
            client.request("refuse", how=how)
        assert (caught.value.code, caught.value.message) == (code, message)
        assert caught.value.request_id == 1
        assert client.request("echo", text="still here") == "still here"
    assert not [line for line in log.lines if line.startswith("Error")]


def test_the_wire_carries_strings(address: tuple[str, int]) -> None:
    with connect(address) as sock:
        sock.sendall(b'{"op": "refuse", "id": 5, "how": "int"}\n')
        line = LineReader(sock).line()
    assert line == b'{"id":5,"ok":false,"error":{"code":"bad_request","message":"404"}}'


def test_bad_request_keeps_structured_data_as_details() -> None:
    assert BadRequest({"name": "is required"}).details == {"name": "is required"}
    assert BadRequest(["a", "b"]).details == ["a", "b"]
    assert BadRequest(404).details is None
    refused = BadRequest("2 fields are wrong", details={"a": "too long", "b": "missing"})
    assert refused.message == "2 fields are wrong"
    assert refused.details == {"a": "too long", "b": "missing"}
    assert str(refused) == "bad_request: 2 fields are wrong"


@pytest.fixture
def peers() -> Iterator[Peers]:
    started = Peers()
    yield started
    started.close()


def test_the_client_hands_details_to_the_caller(peers: Peers) -> None:
    reply = encode_error("bad_request", "check the fields", 1, {"name": "is required"})
    host, port = peers.start(peers.answer(reply))
    with Client(host, port) as client, pytest.raises(RemoteError) as caught:
        client.request("save", name="")
    assert (caught.value.code, caught.value.message) == ("bad_request", "check the fields")
    assert caught.value.details == {"name": "is required"}


def test_a_real_server_sends_bad_requests_details(address: tuple[str, int]) -> None:
    with Client(*address) as client, pytest.raises(RemoteError) as caught:
        client.request("refuse", how="dict")
    assert caught.value.details == {"name": "is required"}
