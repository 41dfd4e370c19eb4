"""Issue 29: a token whenever the pipe listens beyond this computer.

Real servers listen on 0.0.0.0 (every interface, as a student serving a
teammate does) and are reached through 127.0.0.1: the rule depends on how
the server listens, not on who connects. The clients, the command lines
and the teammate examples authenticate against them; the loopback default
and ``--no-token`` behave as before.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import (
    FAKE_POLL,
    ROOT,
    WAIT,
    FakeClock,
    LineReader,
    LogCapture,
    cli_env,
    connect,
    wait_until,
)

from spike import Client, OpRegistry, Server, Unauthorized, default_ops, running_server
from spike.errors import ERROR_CODES, UNAUTHORIZED
from spike.protocol import MAX_AUTH_LINE_BYTES
from spike.server import DEFAULT_AUTH_TIMEOUT
from spike.server._auth import BLOCK_SECONDS, MAX_FAILURES, Gate

TOKEN = "correct-horse-battery-staple-29"
AUTH = json.dumps({"op": "auth", "token": TOKEN}).encode() + b"\n"


@pytest.fixture
def guarded(log: LogCapture) -> Iterator[Server]:
    """A server on every interface with a token, logging into ``log``."""
    with running_server(host="0.0.0.0", port=0, token=TOKEN, log=log, poll_interval=0.05) as srv:
        yield srv


def local(server: Server) -> tuple[str, int]:
    """Where a client on this computer reaches ``server``."""
    return "127.0.0.1", server.address[1]


def refused(sock: socket.socket) -> dict:
    """The one reply before the server closes: an ``unauthorized`` error."""
    reader = LineReader(sock)
    reply = json.loads(reader.line())
    assert reader.closed_by_peer(), "the connection should be closed after the reply"
    assert reply["ok"] is False and reply["error"]["code"] == UNAUTHORIZED, reply
    return reply


# --- the protocol ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "first",
    [
        b"A message from CS361\n",
        b'{"op": "echo", "id": 1, "text": "hi"}\n',
        b'{"op": "info"}\n',
        b'{"op": "auth"}\n',
        b'{"op": "auth", "token": 29}\n',
        b'{"op": "auth", "token": "' + TOKEN.encode() + b'"\n',  # broken JSON
        b"\xff\xfe\n",
    ],
)
def test_a_first_line_that_is_not_the_right_auth_line_is_refused(guarded, first) -> None:
    with connect(local(guarded)) as sock:
        sock.sendall(first)
        reply = refused(sock)
    assert "needs a token" in reply["error"]["message"] or "token" in reply["error"]["message"]
    assert TOKEN not in json.dumps(reply)


def test_the_right_token_opens_the_connection_as_before(guarded) -> None:
    with connect(local(guarded)) as sock:
        reader = LineReader(sock)
        sock.sendall(b'{"op": "auth", "id": 7, "token": "' + TOKEN.encode() + b'"}\r\n')
        assert json.loads(reader.line()) == {
            "id": 7,
            "ok": True,
            "result": {"token_required": True},
        }
        sock.sendall(b'A message from CS361\n{"op": "echo", "id": 1, "text": "hi"}\n')
        assert reader.line() == b"A message from CS361"
        assert json.loads(reader.line())["result"] == {"text": "hi"}
        # Sent again later, auth is checked but closes nothing.
        sock.sendall(b'{"op": "auth", "id": 2, "token": "nope"}\nstill here\n')
        assert json.loads(reader.line())["error"]["code"] == UNAUTHORIZED
        assert reader.line() == b"still here"


def test_lines_pipelined_behind_the_auth_line_are_answered(guarded) -> None:
    with connect(local(guarded)) as sock:
        reader = LineReader(sock)
        sock.sendall(AUTH + b"one\n" * 1000 + b"last")  # the last one ends with the stream
        sock.shutdown(socket.SHUT_WR)
        assert json.loads(reader.line())["ok"] is True
        assert [reader.line() for _ in range(1001)] == [b"one"] * 1000 + [b"last"]
        assert reader.at_eof()


def test_a_wrong_token_is_refused_with_its_request_id(guarded) -> None:
    with connect(local(guarded)) as sock:
        sock.sendall(b'{"op": "auth", "id": "a", "token": "' + TOKEN[:-1].encode() + b'"}\n')
        reply = refused(sock)
    assert reply["id"] == "a"
    assert reply["error"]["message"].startswith("wrong token")


def test_an_auth_line_ended_by_the_stream_is_still_judged(guarded) -> None:
    for line, ok in ((AUTH[:-1], True), (b"hello", False)):
        with connect(local(guarded)) as sock:
            sock.sendall(line)
            sock.shutdown(socket.SHUT_WR)
            reader = LineReader(sock)
            assert json.loads(reader.line())["ok"] is ok
            assert reader.closed_by_peer()


def test_an_over_long_first_line_is_refused_without_being_held(guarded, log) -> None:
    with connect(local(guarded)) as sock:
        sock.sendall(b"x" * (MAX_AUTH_LINE_BYTES + 2))  # no newline: refused before one comes
        reply = refused(sock)
    assert f"longer than {MAX_AUTH_LINE_BYTES} bytes" in reply["error"]["message"]
    log.wait_for(lambda line: "refused: the first line is longer" in line)
    assert guarded.buffered_bytes == 0
    # A full-length auth line still fits.
    padded = b'{"op": "auth", "token": "' + TOKEN.encode() + b'"' + b" " * 4096
    padded = padded[: MAX_AUTH_LINE_BYTES - 1] + b"}\n"
    with connect(local(guarded)) as sock:
        sock.sendall(padded)
        assert json.loads(LineReader(sock).line())["ok"] is True


def test_a_silent_connection_is_closed_at_its_deadline(log) -> None:
    with running_server(
        host="0.0.0.0", port=0, token=TOKEN, auth_timeout=0.3, log=log, poll_interval=0.05
    ) as server:
        started = time.monotonic()
        with connect(local(server)) as sock:
            sock.sendall(b'{"op": "auth", "tok')  # half a line, then nothing
            reply = refused(sock)
        took = time.monotonic() - started
        assert 0.25 < took < WAIT, took
        assert reply["error"]["message"].startswith("no auth line within 0.3 s")
        log.wait_for(lambda line: "refused: no auth line within 0.3 s" in line)
        wait_until(lambda: server.open_connections == 0, what="the refused connection closed")


def test_the_documented_deadline_is_at_most_ten_seconds() -> None:
    assert DEFAULT_AUTH_TIMEOUT <= 10
    page = (ROOT / "docs" / "spike" / "protocol.md").read_text(encoding="utf-8")
    assert f"{DEFAULT_AUTH_TIMEOUT:g} s" in page and f"{MAX_AUTH_LINE_BYTES:,} bytes" in page


def test_the_protocol_page_nc_example_gets_the_replies_it_shows(guarded) -> None:
    page = (ROOT / "docs" / "spike" / "protocol.md").read_text(encoding="utf-8")
    shown = re.search(
        r"^\$ printf '(?P<format>[^']+)' \"\$TOKEN\" \| nc -N \S+ \d+\n(?P<out>(?:[^`\n].*\n)+)",
        page,
        re.M,
    )
    assert shown, "the protocol page no longer shows the nc example with a token"
    sent = shown["format"].replace("%s", TOKEN).replace("\\n", "\n").encode()
    received = b""
    with connect(local(guarded)) as sock:
        sock.sendall(sent)
        sock.shutdown(socket.SHUT_WR)  # what nc -N does
        while data := sock.recv(65536):
            received += data
    assert received.decode() == shown["out"]


def test_a_stopping_server_does_not_wait_for_unauthenticated_connections() -> None:
    with running_server(host="0.0.0.0", port=0, token=TOKEN, poll_interval=0.05) as server:
        sock = connect(local(server))
        time.sleep(0.1)  # accepted
        started = time.monotonic()
    took = time.monotonic() - started
    with sock:
        assert LineReader(sock).closed_by_peer()
    assert took < 1.5, f"closing waited {took:.2f} s for a connection that owed nothing"


# --- nothing helps an attacker ---------------------------------------------------------
def test_the_token_never_reaches_the_log_stats_info_or_an_error(guarded, log) -> None:
    with connect(local(guarded)) as sock:  # a near miss
        sock.sendall(b'{"op": "auth", "token": "' + TOKEN[:-1].encode() + b'"}\n')
        refused(sock)
    with Client(*local(guarded), token=TOKEN, timeout=WAIT) as client:
        answers = [client.request("stats"), client.request("info")]
        client.exchange(AUTH.decode().rstrip("\n"))  # again, on an open connection
        client.exchange('{"op": "auth", "token": "' + TOKEN + '"')  # broken JSON
        client.exchange('{"op": "nope", "token": "' + TOKEN + '"}')  # unknown op
    log.wait_for(lambda line: line.startswith("Connection closed") and "(5 messages)" in line)
    shown = "\n".join(log.lines) + json.dumps(answers)
    assert TOKEN not in shown and TOKEN[:-1] not in shown
    assert sum("refused: wrong token" in line for line in log.lines) == 1
    assert repr(guarded._gate).startswith("<Gate") and TOKEN not in repr(guarded._settings)


def test_a_guesser_is_turned_away_after_repeated_failures(log) -> None:
    clock = FakeClock()
    with running_server(
        host="0.0.0.0", port=0, token=TOKEN, log=log, clock=clock, poll_interval=FAKE_POLL
    ) as server:
        started = time.monotonic()
        for guess in range(MAX_FAILURES):
            with connect(local(server)) as sock:
                sock.sendall(b'{"op": "auth", "token": "guess-%d"}\n' % guess)
                refused(sock)
        guessing = time.monotonic() - started
        wait_until(lambda: server.open_connections == 0, what="the guesses closed")
        # Now even the right token is turned away at once, without a word in the log.
        lines_before = len(log.lines)
        for _ in range(5):
            with connect(local(server)) as sock:
                sock.sendall(AUTH)
                reply = refused(sock)
        assert reply["error"]["message"].startswith("too many failed attempts")
        time.sleep(0.1)
        assert log.lines[lines_before:] == []
        episodes = [line for line in log.lines if "failed to authenticate" in line]
        assert episodes == [
            f"Error: 127.0.0.1 failed to authenticate {MAX_FAILURES} times within 60 s; "
            f"its new connections are refused for {BLOCK_SECONDS:g} s"
        ]
        assert sum("refused: wrong token" in line for line in log.lines) == MAX_FAILURES
        assert server.total_connections == MAX_FAILURES  # turned-away ones are not served
        # A minute later the right token works again.
        clock.advance(BLOCK_SECONDS + 1)
        with Client(*local(server), token=TOKEN, timeout=WAIT) as client:
            assert client.send_text("back") == "back"
    print(f"\n{MAX_FAILURES} wrong guesses took {guessing * 1000:.0f} ms before the block")


def test_the_failure_books_stay_bounded_whatever_the_addresses() -> None:
    """An attacker with many addresses evicts old records; it cannot grow the table."""
    lines: list[str] = []
    gate: Gate = Gate(TOKEN, 10.0, lines.append)
    for n in range(20_000):
        gate.failed((f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", 5000), "wrong token", 0.0)
    assert len(gate._records) <= 4096
    assert len(lines) == 20_000  # each failure logged once, no episode started
    # An IPv4 client of a dual-stack server counts as its IPv4 address.
    for _ in range(MAX_FAILURES):
        gate.failed(("::ffff:192.0.2.9", 1, 0, 0), "wrong token", 1.0)
    assert lines[-1].startswith("Error: 192.0.2.9 failed to authenticate")


# --- the loopback default and servers without a token ----------------------------------
def test_a_server_without_a_token_answers_auth_and_needs_none(server) -> None:
    with connect(server.address) as sock:
        reader = LineReader(sock)
        sock.sendall(b"hi\n" + AUTH)
        assert reader.line() == b"hi"
        assert json.loads(reader.line()) == {"ok": True, "result": {"token_required": False}}
    host, port = server.address
    with Client(host, port, token="anything") as client:
        assert client.request("echo", text="x") == {"text": "x"}


def test_no_op_may_take_the_auth_name() -> None:
    with pytest.raises(ValueError, match="'auth' is taken"):
        default_ops.copy().add("auth", lambda params, ctx: None)
    with pytest.raises(ValueError, match="'auth' is taken"):
        OpRegistry({"auth": lambda params, ctx: None})


def test_unauthorized_is_a_documented_error_code() -> None:
    assert UNAUTHORIZED in ERROR_CODES


# --- the Python client ------------------------------------------------------------------
def test_the_client_authenticates_on_connect(guarded) -> None:
    with Client(*local(guarded), token=TOKEN, timeout=WAIT) as client:
        assert client.send_text("A message from CS361") == "A message from CS361"
        assert client.request("echo", text="hi") == {"text": "hi"}


@pytest.mark.parametrize(
    ("token", "says"),
    [(None, "needs a token: ask its owner"), ("wrong", "refused the token: ask its owner")],
)
def test_the_client_says_what_to_do_without_the_right_token(guarded, token, says) -> None:
    where = f"127.0.0.1:{guarded.address[1]}"
    with pytest.raises(Unauthorized) as caught, Client(*local(guarded), token=token) as client:
        client.request("info")
    assert caught.value.code == UNAUTHORIZED
    assert caught.value.message == f"{where} {says} for the one it printed at start"
    with pytest.raises(Unauthorized), Client(*local(guarded)) as client:
        client.exchange("hello")  # a raw exchange too: the server has hung up


@pytest.mark.parametrize("token", ["", "x" * MAX_AUTH_LINE_BYTES, 29])
def test_the_client_refuses_a_token_that_cannot_be_sent(token) -> None:
    with pytest.raises(ValueError, match="token must"):
        Client("127.0.0.1", 9, token=token)


# --- the command lines ---------------------------------------------------------------------
def run(module: str, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = cli_env()
    env.pop("SPIKE_TOKEN", None)
    if token is not None:
        env["SPIKE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


START = re.compile(
    r"Serving on 0\.0\.0\.0:(?P<port>\d+) \(every network interface: a teammate connects with "
    r"spike-client --host (?P<host>\S+) --port (?P=port) --token (?P<token>[0-9a-f]{32}); "
    r"press Ctrl\+C to stop\)"
)


def test_the_server_prints_a_fresh_token_and_the_command_that_uses_it(server_process) -> None:
    proc = server_process("--host", "0.0.0.0", "--port", "0")
    shown = START.fullmatch(proc.first_line)
    assert shown, proc.first_line
    token, port = shown["token"], shown["port"]
    assert server_process("--host", "0.0.0.0", "--port", "0").first_line != proc.first_line
    ok = run("spike.client", "--port", port, "--token", token, "hi")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == ["Sent: hi", "Received: hi"]
    from_variable = run("spike.client", "--port", port, "--op", "info", token=token)
    assert from_variable.returncode == 0, from_variable.stderr
    missing = run("spike.client", "--port", port, "hi")
    wrong = run("spike.client", "--port", port, "--token", "0" * 32, "hi")
    for done, says in (
        (missing, "needs a token: ask its owner for the one it printed at start, then pass it "),
        (wrong, "refused the token: ask its owner for the one it printed at start"),
    ):
        assert done.returncode == 1
        (line,) = done.stderr.splitlines()  # one line, no traceback
        assert line.startswith(f"spike-client: 127.0.0.1:{port} {says}"), line
    log = [proc.next_line() for _ in range(12)]
    assert not any(token in line for line in log), log
    assert sum("refused: " in line for line in log) == 2, log


def test_the_tutorial_shows_the_start_line_the_server_prints(server_process) -> None:
    page = (ROOT / "docs" / "spike" / "tutorial.md").read_text(encoding="utf-8")
    shown = re.search(
        r"^\$ uv run spike-server (?P<args>.*--host 0\.0\.0\.0)\n(?P<line>Serving on .*)$",
        page,
        re.M,
    )
    assert shown, "the tutorial no longer shows spike-server --host 0.0.0.0 and its start line"
    args = shlex.split(shown["args"].replace("--port 3001", "--port 0"))
    proc = server_process(*args)

    def general(line: str, port: object) -> str:
        line = line.replace(f":{port} ", ":PORT ").replace(f"--port {port} ", "--port PORT ")
        line = re.sub(r"--host \S+", "--host HOST", line)
        return re.sub(r"--token [0-9a-f]{32};", "--token TOKEN;", line)

    assert general(proc.first_line, proc.port) == general(shown["line"], 3001)


def test_a_token_from_the_environment_is_named_not_printed(server_process, monkeypatch) -> None:
    monkeypatch.setenv("SPIKE_TOKEN", TOKEN)
    proc = server_process("--host", "0.0.0.0", "--port", "0")
    assert proc.first_line == (
        f"Serving on 0.0.0.0:{proc.port} (every network interface: clients need the token "
        "from SPIKE_TOKEN; press Ctrl+C to stop)"
    )
    done = run("spike.client", "--port", str(proc.port), "hi", token=TOKEN)
    assert done.returncode == 0, done.stderr


def test_no_token_is_explicit_and_warns_in_the_start_line(server_process) -> None:
    proc = server_process("--host", "0.0.0.0", "--port", "0", "--no-token")
    assert proc.first_line == (
        f"Serving on 0.0.0.0:{proc.port} (every network interface: no token (--no-token): "
        "anyone who can reach this computer can call every op; press Ctrl+C to stop)"
    )
    done = run("spike.client", "--port", str(proc.port), "hi")  # as before
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "Received: hi"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_needs_no_token_unless_one_is_set(server_process, monkeypatch, host) -> None:
    monkeypatch.setenv("SPIKE_TOKEN", TOKEN)  # kept for a teammate's server: not this one's
    proc = server_process("--host", host, "--port", "0")
    assert proc.first_line == f"Serving on 127.0.0.1:{proc.port} (press Ctrl+C to stop)"
    with_token = server_process("--host", host, "--port", "0", "--token", TOKEN)
    assert "clients need the token from --token" in with_token.first_line
    plain = run("spike.client", "--port", str(proc.port), "hi", token=TOKEN)
    assert plain.returncode == 0 and plain.stdout.splitlines()[-1] == "Received: hi"
    done = run("spike.client", "--port", str(with_token.port), "hi")
    assert done.returncode == 1 and "needs a token" in done.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--token", ""], "argument --token: a token must be a non-empty string"),
        (["--token", "x", "--no-token"], "not allowed with argument"),
    ],
)
def test_a_bad_token_option_is_one_line(args, says) -> None:
    for module in ("spike.server", "spike.client"):
        if module == "spike.client" and "--no-token" in args:
            continue
        done = run(module, "--port", "0", *args)
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr


def test_a_bad_token_in_the_environment_is_one_line() -> None:
    for module, *args in (("spike.server", "--host", "0.0.0.0"), ("spike.client", "hi")):
        done = run(module, "--port", "0", *args, token="x" * 5000)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert "SPIKE_TOKEN: a token must fit" in done.stderr
