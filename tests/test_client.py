"""The Client library against the real server and against raw misbehaving peers."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator

import pytest
from conftest import WAIT, free_port

from spike import (
    Client,
    ConnectError,
    ConnectionClosed,
    PipeError,
    PipeTimeout,
    ProtocolError,
    RemoteError,
    running_server,
)
from spike.client import _connect_failure
from spike.protocol import format_address


@pytest.fixture
def raw_peer() -> Iterator[Callable[[Callable[[socket.socket], None]], tuple[str, int]]]:
    """A one-connection TCP peer that runs ``behave(conn)``: a server that breaks the rules."""
    listeners: list[socket.socket] = []
    threads: list[threading.Thread] = []

    def start(behave: Callable[[socket.socket], None]) -> tuple[str, int]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(WAIT)
        listeners.append(listener)

        def run() -> None:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(WAIT)
                behave(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return listener.getsockname()[:2]

    yield start
    for listener in listeners:
        listener.close()
    for thread in threads:
        thread.join(WAIT)


def read_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_round_trips(server) -> None:
    with Client(*server.address) as client:
        assert client.send_text("A message from CS361!") == "A message from CS361!"
        assert client.send_text("") == ""
        assert client.send_text("ünïcødé 𝄞") == "ünïcødé 𝄞"
        assert client.request("echo", text="json") == {"text": "json"}
        assert client.send_line('{"op": "echo", "id": "raw", "text": "x"}') == (
            '{"id":"raw","ok":true,"result":{"text":"x"}}'
        )
    assert client.closed


def test_error_reply_raises_remote_error(server) -> None:
    with Client(*server.address) as client:
        with pytest.raises(RemoteError) as caught:
            client.request("no_such_op")
        assert caught.value.code == "unknown_op"
        assert "no_such_op" in caught.value.message
        assert caught.value.request_id == 1
        with pytest.raises(RemoteError) as caught:
            client.request("echo")
        assert caught.value.code == "bad_request"
        assert client.request("echo", text="usable") == {"text": "usable"}


def test_plain_text_error_reply_raises() -> None:
    with running_server(port=0, max_line_bytes=10) as server, Client(*server.address) as client:
        with pytest.raises(RemoteError) as caught:
            client.send_text("much longer than ten bytes")
        assert caught.value.code == "line_too_long"


def test_a_refused_huge_message_reports_the_servers_error_not_a_broken_pipe() -> None:
    # The server answers line_too_long and hangs up long before the client
    # has sent 32 MB, so sendall() fails; the answer is still there to read.
    with running_server(port=0, max_line_bytes=1000) as server, Client(*server.address) as client:
        with pytest.raises(PipeError) as caught:
            client.send_text("y" * 32_000_000)
        if sys.platform.startswith("linux"):  # elsewhere a reset may discard the answer
            assert isinstance(caught.value, RemoteError), caught.value
            assert caught.value.code == "line_too_long"
        with pytest.raises(ConnectionClosed) as caught:
            client.send_text("again")
        assert f"{server.address[0]}:{server.address[1]}" in str(caught.value)


def test_text_that_only_looks_like_json_is_returned(raw_peer) -> None:
    def behave(conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(b'{"not": "a reply"}\n')

    with Client(*raw_peer(behave)) as client:
        assert client.send_text("hi") == '{"not": "a reply"}'


def test_a_newline_in_a_message_is_refused(server) -> None:
    with Client(*server.address) as client:
        with pytest.raises(ValueError):
            client.send_text("two\nmessages")
        assert client.send_text("fine") == "fine"


def test_connection_refused_names_the_address() -> None:
    port = free_port()
    with pytest.raises(ConnectError) as caught:
        Client("127.0.0.1", port, timeout=WAIT)
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "refused" in str(caught.value)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "0:0:0:0:0:0:0:0"])
def test_a_wildcard_host_gets_a_hint_to_use_a_real_address(host: str) -> None:
    message = _connect_failure(host, 3000, "connection refused (is the server running?)")
    assert message.startswith(
        f"cannot connect to {format_address((host, 3000))}: connection refused"
    )
    assert f'{host} means "every interface" on the server side' in message
    assert "127.0.0.1" in message and "\n" not in message


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "192.168.1.20"])
def test_a_real_host_gets_no_hint(host: str) -> None:
    assert "every interface" not in _connect_failure(host, 3000, "timed out after 5 s")


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="Linux routes a connect to 0.0.0.0 to this machine",
)
def test_a_failed_connect_to_0_0_0_0_carries_the_hint() -> None:
    port = free_port()
    with pytest.raises(ConnectError) as caught:
        Client("0.0.0.0", port, timeout=WAIT)
    assert f"cannot connect to 0.0.0.0:{port}: connection refused" in str(caught.value)
    assert "connect to: use 127.0.0.1 (same machine) or the server's IP address" in str(
        caught.value
    )


def test_ipv6_address_is_written_in_brackets() -> None:
    port = free_port()
    with pytest.raises(PipeError) as caught:
        Client("::1", port, timeout=WAIT)
    assert f"[::1]:{port}" in str(caught.value)


def test_unknown_host() -> None:
    with pytest.raises(ConnectError) as caught:
        Client("no-such-host.invalid", 3000, timeout=WAIT)
    assert "no-such-host.invalid:3000" in str(caught.value)


def test_no_reply_times_out_and_closes(raw_peer) -> None:
    done = threading.Event()
    host, port = raw_peer(lambda conn: done.wait(WAIT))  # reads nothing, says nothing
    client = Client(host, port, timeout=0.3)
    with pytest.raises(PipeTimeout) as caught:
        client.send_text("anyone there?")
    done.set()
    assert f"{host}:{port}" in str(caught.value)
    assert client.closed
    with pytest.raises(ConnectionClosed):
        client.send_text("again")


def test_peer_hangs_up_before_replying(raw_peer) -> None:
    address = raw_peer(read_line)
    with Client(*address) as client, pytest.raises(ConnectionClosed) as caught:
        client.send_text("hello?")
    assert f"{address[0]}:{address[1]}" in str(caught.value)


@pytest.mark.parametrize(
    "reply",
    [b"not json at all\n", b'{"ok": "yes"}\n', b'{"id": 99, "ok": true, "result": 1}\n'],
)
def test_malformed_replies_raise_protocol_error(raw_peer, reply: bytes) -> None:
    def behave(conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(reply)

    address = raw_peer(behave)
    with Client(*address) as client, pytest.raises(ProtocolError) as caught:
        client.request("echo", text="x")
    assert f"reply from {address[0]}:{address[1]}" in str(caught.value)


def test_reply_longer_than_the_client_limit(raw_peer) -> None:
    def behave(conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(b"y" * 2000 + b"\n")

    with (
        Client(*raw_peer(behave), max_reply_bytes=1000) as client,
        pytest.raises(ProtocolError) as caught,
    ):
        client.send_text("x")
    assert caught.value.code == "line_too_long"


def test_every_error_is_a_pipe_error() -> None:
    for error in (ConnectError, ConnectionClosed, PipeTimeout, ProtocolError, RemoteError):
        assert issubclass(error, PipeError)
