"""The Client library against the real server and against raw misbehaving peers."""

from __future__ import annotations

import json
import math
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import WAIT, free_port
from peers import Peers, ipv6_loopback

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
from spike._display import shorten
from spike.client import MAX_TIMEOUT, check_reply
from spike.client._client import _connect_failure
from spike.errors import NO_ID
from spike.protocol import encode_result, format_address


@pytest.fixture
def peers() -> Iterator[Peers]:
    started = Peers()
    yield started
    started.close()


@pytest.fixture
def raw_peer(peers: Peers) -> Callable[[Callable[[socket.socket], None]], tuple[str, int]]:
    """A one-connection TCP peer that runs ``behave(conn)``: a server that breaks the rules."""
    return peers.start


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


# --- the timeout is a deadline ---------------------------------------------------
def test_a_trickled_reply_is_cut_off_at_the_deadline(peers: Peers) -> None:
    # One byte every 0.1 s: a per-recv timeout of 0.5 s would never fire.
    host, port = peers.start(peers.trickle(every=0.1))
    client = Client(host, port, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(PipeTimeout) as caught:
        client.send_text("hi")
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5, elapsed
    message = str(caught.value)
    assert message.startswith(f"no complete reply from {host}:{port} within 0.5 s (")
    assert "bytes arrived, but no end of line" in message
    assert client.closed


def test_a_trickled_reply_to_a_request_is_cut_off_too(peers: Peers) -> None:
    host, port = peers.start(peers.trickle(every=0.1, byte=b"{"))
    started = time.monotonic()
    with Client(host, port, timeout=0.5) as client, pytest.raises(PipeTimeout):
        client.request("info")
    assert time.monotonic() - started < 1.5


def test_each_exchange_has_its_own_deadline(peers: Peers) -> None:
    def slow_echo(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        while line := reader.readline():
            time.sleep(0.3)
            conn.sendall(line)

    # Three replies of 0.3 s each: 0.9 s in all, each well within 0.6 s.
    with Client(*peers.start(slow_echo), timeout=0.6) as client:
        assert [client.send_text(text) for text in ("a", "b", "c")] == ["a", "b", "c"]


def test_a_server_that_does_not_read_times_out_the_send(peers: Peers) -> None:
    host, port = peers.start(peers.silent())
    client = Client(host, port, timeout=0.5)
    started = time.monotonic()
    # Far more than the two socket buffers between us hold.
    with pytest.raises(PipeTimeout) as caught:
        client.send_text("y" * 64_000_000)
    assert time.monotonic() - started < 2.0
    assert str(caught.value).startswith(f"sending to {host}:{port} did not finish within 0.5 s")
    assert client.closed


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf, 1e308, MAX_TIMEOUT * 2])
def test_a_timeout_that_is_no_deadline_is_refused(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout must be None or more than 0"):
        Client("127.0.0.1", free_port(), timeout=timeout)


def test_no_timeout_waits_without_a_deadline(peers: Peers) -> None:
    big = b"z" * 16_000_000  # more than the socket buffers hold: sendall() must wait

    def slow_peer(conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        reader.readline()
        time.sleep(0.6)  # longer than one slice of the client's wait for a reply
        conn.sendall(b"first\n")
        time.sleep(0.6)  # then let the client's send of the big line block
        conn.sendall(b"%d\n" % len(reader.readline().rstrip(b"\n")))

    with Client(*peers.start(slow_peer), timeout=None) as client:
        assert client.send_text("patient") == "first"
        assert client.send_text(big.decode()) == str(len(big))


# --- replies that are not the protocol's ---------------------------------------
@pytest.mark.parametrize(
    ("reply", "code", "says"),
    [
        (
            b"HTTP/1.1 400 Bad Request\r\n",
            "bad_json",
            "is not JSON: 'HTTP/1.1 400 Bad Request'",
        ),
        (
            b'{"id":1,"ok":true,"result":"caf\xff"}\n',
            "bad_utf8",
            """is not valid UTF-8: b'{"id":1,"ok":true,"result":"caf\\xff"}'""",
        ),
        (b"[1, 2]\n", "bad_request", "is not a pipe reply (not an object with a boolean"),
        (
            b'{"id":2,"ok":true,"result":{}}\n',
            "bad_request",
            "has id 2, but the request had id 1:",
        ),
        (
            b'{"id":true,"ok":true,"result":{}}\n',
            "bad_request",
            "has id True, but the request had id 1:",
        ),
        (b'{"ok":true,"result":{}}\n', "bad_request", "has no id, but the request had id 1:"),
    ],
)
def test_a_reply_that_is_not_the_requests_is_a_protocol_error(
    peers: Peers, reply: bytes, code: str, says: str
) -> None:
    host, port = peers.start(peers.answer(reply))
    client = Client(host, port, timeout=WAIT)
    with pytest.raises(ProtocolError) as caught:
        client.request("info")
    assert caught.value.code == code
    assert str(caught.value) == f"{code}: {caught.value.message}"
    assert caught.value.message.startswith(f"reply from {host}:{port} {says}"), caught.value
    assert client.closed  # what comes next on this connection cannot be trusted


def test_an_error_reply_without_an_id_is_the_servers_answer(peers: Peers) -> None:
    # A server cannot repeat the id of a request it could not read.
    reply = b'{"ok":false,"error":{"code":"bad_json","message":"not valid JSON"}}\n'
    with Client(*peers.start(peers.answer(reply)), timeout=WAIT) as client:
        with pytest.raises(RemoteError) as caught:
            client.request("info")
        assert caught.value.code == "bad_json"


def test_check_reply_shortens_and_escapes_what_came_back() -> None:
    long_line = b'{"ok":' + b"x" * 500 + b"\r\x1b[2J"
    with pytest.raises(ProtocolError) as caught:
        check_reply(long_line, 1, "h:1")
    message = str(caught.value)
    assert message.endswith(f"...' ({len(long_line)} bytes)") or message.endswith(
        f"'... ({len(long_line)} bytes)"
    )
    assert len(message) < 150
    assert "\x1b" not in message and "\r" not in message
    assert check_reply(b'{"ok":true,"result":null}', NO_ID, "h:1") == {
        "ok": True,
        "result": None,
    }
    assert check_reply(b'{"id":[1,{"a":"b"}],"ok":true,"result":0}', [1, {"a": "b"}], "h:1")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b"caf\xff", "b'caf\\xff'"),
        ("line\nbreak", "'line\\nbreak'"),
        ("a" * 70, "'" + "a" * 60 + "'... (70 characters)"),
        (b"b" * 70, "'" + "b" * 60 + "'... (70 bytes)"),
    ],
)
def test_shorten(value: str | bytes, shown: str) -> None:
    assert shorten(value) == shown


# --- hosts and text the client cannot use -------------------------------------
def test_a_bracketed_ipv6_host_is_named_once_in_brackets() -> None:
    port = free_port()
    with pytest.raises(PipeError) as caught:
        Client("[::1]", port, timeout=WAIT)
    assert f"[::1]:{port}" in str(caught.value)
    assert "[[" not in str(caught.value)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_a_bracketed_ipv6_host_connects(peers: Peers) -> None:
    _, port = peers.start(peers.answer(b"over six\n"), host="::1")
    with Client("[::1]", port, timeout=WAIT) as client:
        assert client.host == "::1"
        assert repr(client) == f"<Client [::1]:{port}>"
        assert client.send_text("over six") == "over six"


@pytest.mark.parametrize("host", ["a..b", "x" * 64 + ".example", "."])
def test_a_host_name_that_cannot_be_looked_up_is_a_connect_error(host: str) -> None:
    with pytest.raises(ConnectError, match="not a valid host name"):
        Client(host, 3000, timeout=WAIT)


def test_text_that_is_not_unicode_is_a_value_error(server) -> None:
    with Client(*server.address) as client:
        with pytest.raises(ValueError, match="valid Unicode text"):
            client.send_text("caf\udcff")  # the byte 0xff, as POSIX argv decodes it
        assert client.send_text("café") == "café"


# --- a line nobody asked for -------------------------------------------------------
class Chatty:
    """A peer that answers each line as a pipe server does (echo, or an ok
    reply with the request's id), but also sends ``banner`` once connected
    and ``after`` after each reply, each in a send of its own. ``wait_sent(n)``
    waits until ``n`` sends are done, so a test knows the extra bytes have
    reached the client's machine before it calls again."""

    def __init__(self, banner: bytes = b"", after: bytes = b"") -> None:
        self.banner = banner
        self.after = after
        self._sent = 0
        self._changed = threading.Condition()

    def __call__(self, conn: socket.socket) -> None:
        if self.banner:
            self._send(conn, self.banner)
        reader = conn.makefile("rb")
        while line := reader.readline():
            line = line.rstrip(b"\n")
            if line.startswith(b"{"):
                request = json.loads(line)
                reply = encode_result({"text": request.get("text")}, request.get("id", NO_ID))
            else:
                reply = line + b"\n"
            self._send(conn, reply)
            if self.after:
                self._send(conn, self.after)

    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self._changed:
            self._sent += 1
            self._changed.notify_all()

    def wait_sent(self, count: int) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: self._sent >= count, WAIT), self._sent


def test_a_blank_line_after_each_reply_is_never_taken_for_the_next_reply(peers: Peers) -> None:
    """Before: send_text("a"), ("b"), ("c") returned "a", "", "b"."""
    peer = Chatty(after=b"\n")
    client = Client(*peers.start(peer), timeout=WAIT)
    assert client.send_text("a") == "a"
    peer.wait_sent(2)
    with pytest.raises(ProtocolError) as caught:
        client.send_text("b")
    assert "sent a line that answers no request: ''" in caught.value.message
    assert "one reply line per message (no banners)" in caught.value.message
    assert client.closed  # the replies are out of step: nothing later can be trusted
    with pytest.raises(ConnectionClosed):
        client.send_text("c")


def test_an_extra_line_in_the_same_packet_as_the_reply_is_caught_too(peers: Peers) -> None:
    host, port = peers.start(peers.answer(b"a\nsurprise\nand more\n"))
    client = Client(host, port, timeout=WAIT)
    assert client.send_text("a") == "a"
    with pytest.raises(ProtocolError) as caught:
        client.send_text("b")
    assert caught.value.message.startswith(
        f"{host}:{port} sent a line that answers no request: 'surprise' (and 1 more line);"
    )


def test_a_banner_is_never_returned_as_a_reply(peers: Peers) -> None:
    peer = Chatty(banner=b"Welcome to my server\x1b[2J\n")
    client = Client(*peers.start(peer), timeout=WAIT)
    peer.wait_sent(1)
    with pytest.raises(ProtocolError) as caught:
        client.send_text("a")
    assert "answers no request: 'Welcome to my server\\x1b[2J'" in caught.value.message


def test_the_start_of_an_unasked_line_is_caught(peers: Peers) -> None:
    client = Client(*peers.start(peers.answer(b"a\nWel")), timeout=WAIT)
    assert client.send_text("a") == "a"
    with pytest.raises(ProtocolError) as caught:
        client.send_text("b")
    assert "sent 3 bytes that answer no request (the start of a line: 'Wel')" in str(caught.value)


def test_json_requests_catch_an_unasked_line_and_still_match_ids(peers: Peers) -> None:
    """request() does not look for bytes before sending (the reply's id
    check catches a line that came later), so the line here arrives with
    the reply, in one packet."""
    host, port = peers.start(peers.answer(b'{"id":1,"ok":true,"result":"one"}\n\n'))
    client = Client(host, port, timeout=WAIT)
    assert client.request("echo", text="one") == "one"
    with pytest.raises(ProtocolError) as caught:
        client.request("echo", text="two")
    assert "sent a line that answers no request: ''" in caught.value.message
    assert client.closed


def test_json_requests_name_an_unasked_line_that_came_on_its_own(peers: Peers) -> None:
    peer = Chatty(after=b"\n")
    client = Client(*peers.start(peer), timeout=WAIT)
    assert client.request("echo", text="one") == {"text": "one"}
    peer.wait_sent(2)
    with pytest.raises(ProtocolError) as caught:
        client.request("echo", text="two")
    # Seen before sending (with the reply) or after (instead of the reply):
    # either way the stray line is named, and never returned as a result.
    message = caught.value.message
    assert message.endswith("''") or "no request: ''" in message, message
    assert "answers no request" in message or "is not JSON" in message, message
    assert client.closed


def test_an_unasked_line_that_comes_after_the_request_is_sent_fails_the_json_request(
    peers: Peers,
) -> None:
    """The reply to a JSON request must carry its id, so a stale line that
    arrives late is still never returned as its result."""
    reply = b"\n" + b'{"id":1,"ok":true,"result":1}\n'
    with Client(*peers.start(peers.answer(reply)), timeout=WAIT) as client:
        with pytest.raises(ProtocolError) as caught:
            client.request("info")
        assert caught.value.message.endswith("is not JSON: ''"), caught.value


def test_a_well_behaved_server_is_never_accused(server) -> None:
    with Client(*server.address) as client:
        for n in range(200):
            assert client.send_text(f"m{n}") == f"m{n}"
            assert client.request("echo", text=f"j{n}") == {"text": f"j{n}"}


def test_plain_text_cannot_tell_a_stray_line_sent_after_the_message_from_its_reply(
    peers: Peers,
) -> None:
    """What the Client docstring says it cannot detect: with no ids, a stray
    line that follows the message is returned as its reply; the real reply
    behind it is then refused by the next call."""
    replied = threading.Event()

    def behave(conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(b"stray\n")
        time.sleep(0.05)  # the real reply comes in a packet of its own
        conn.sendall(b"a\n")
        replied.set()
        read_line(conn)

    host, port = peers.start(behave)
    client = Client(host, port, timeout=WAIT)
    assert client.send_text("a") == "stray"  # indistinguishable from a reply
    assert replied.wait(WAIT)
    with pytest.raises(ProtocolError) as caught:
        client.send_text("b")
    assert caught.value.message.startswith(
        f"{host}:{port} sent a line that answers no request: 'a';"
    )
    assert client.closed


# --- a reply cut mid-line ------------------------------------------------------------
def test_a_reply_cut_mid_line_is_named_as_such(raw_peer) -> None:
    """Before: "closed the connection without a reply", though part of one came."""

    def behave(conn: socket.socket) -> None:
        read_line(conn)
        conn.sendall(b'{"id":1,"ok":tr')  # and hang up

    host, port = raw_peer(behave)
    with Client(host, port) as client, pytest.raises(ConnectionClosed) as caught:
        client.request("echo", text="x")
    assert str(caught.value) == (
        f"{host}:{port} closed the connection in the middle of a reply: 15 bytes arrived "
        'without an end of line (\'{"id":1,"ok":tr\')'
    )
    assert client.closed


def test_a_hang_up_before_any_byte_of_the_reply_says_no_reply(raw_peer) -> None:
    host, port = raw_peer(read_line)
    with Client(host, port) as client, pytest.raises(ConnectionClosed) as caught:
        client.send_text("hello?")
    assert str(caught.value) == f"{host}:{port} closed the connection without a reply"
