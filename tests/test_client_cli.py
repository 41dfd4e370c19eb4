"""spike-client against servers that break the rules, with arguments and input
that are wrong: one line on stderr and the right exit status, never a traceback.

Behaviour that is about exit codes and stderr runs the CLI as a real
subprocess; the property test runs its argument parser in this process.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from helpers import ROOT, WAIT, cli_env, free_port, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peers import Peers, ipv6_loopback

from spike.cli._client import _parse_client_args
from spike.client import MAX_TIMEOUT


@pytest.fixture
def peers() -> Iterator[Peers]:
    started = Peers()
    yield started
    started.close()


def assert_one_line_error(stderr: str, *needles: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def run_client_bytes(
    *args: str | bytes, input: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m spike.client`` with bytes in and out, for encodings the
    text-mode helper would hide."""
    return subprocess.run(
        [sys.executable, "-m", "spike.client", *args],
        input=input,
        capture_output=True,
        timeout=20,
        cwd=ROOT,
        env={**cli_env(), **(env or {})},
    )


# --- the timeout is a deadline ---------------------------------------------------
def test_a_trickling_server_is_given_up_on_at_the_deadline(peers: Peers) -> None:
    host, port = peers.start(peers.trickle(every=0.2))
    started = time.monotonic()
    result = run_cli("spike.client", "--port", str(port), "--timeout", "1", "hi")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert_one_line_error(
        result.stderr,
        f"spike-client: no complete reply from {host}:{port} within 1 s",
        "bytes arrived, but no end of line",
    )
    # Python's start-up included; the trickle alone would go on for 20 s.
    assert elapsed < 3.0, elapsed


def test_a_silent_server_is_given_up_on_at_the_deadline(peers: Peers) -> None:
    host, port = peers.start(peers.silent())
    result = run_cli("spike.client", "--port", str(port), "--timeout", "0.5", "--op", "info")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"spike-client: no reply from {host}:{port} within 0.5 s")


def test_help_says_what_is_sent_and_that_the_timeout_is_a_deadline() -> None:
    result = run_cli("spike.client", "--help")
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "joined by spaces, as echo joins them" in help_text
    assert "-m one -m two sends two" in help_text
    assert "one per line on standard input" in help_text
    assert "deadline in seconds for connecting, and for each message" in help_text
    assert "however slowly the server sends it" in help_text


# --- a reply that is not the pipe's is named, in one line ------------------------
WEB = "answered like a web server (HTTP), not the pipe"


@pytest.mark.parametrize(
    "args",
    [
        ["A", "message", "from", "CS361"],  # plain text, as typed without quotes
        ["--op", "info"],  # a JSON request
        ["--json", "-m", "hi"],
    ],
)
def test_the_docs_server_is_named_as_a_web_server(peers: Peers, args: list[str]) -> None:
    # `mkdocs serve` is Python's http.server, which answers a line that is no
    # HTTP request the HTTP/0.9 way: an HTML error page without a status line.
    host, port = peers.http()
    result = run_cli("spike.client", "--port", str(port), *args)
    assert result.returncode == 1
    # Python 3.10 writes the HTML 4.01 doctype, later versions the short one.
    assert result.stdout.splitlines()[1].startswith("Received: <!DOCTYPE HTML")
    assert len(result.stdout.splitlines()) == 2  # nothing sent after it
    assert_one_line_error(
        result.stderr,
        f"spike-client: {host}:{port} {WEB}: is that the docs server? "
        "the pipe listens on 3000 by default",
    )


@pytest.mark.parametrize("args", [["hi"], ["--op", "info"]])
def test_an_http_status_line_is_named_as_a_web_server(peers: Peers, args: list[str]) -> None:
    host, port = peers.start(
        peers.answer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    )
    result = run_cli("spike.client", "--port", str(port), *args)
    assert result.returncode == 1
    assert result.stdout.splitlines()[1] == "Received: HTTP/1.1 400 Bad Request"
    assert_one_line_error(result.stderr, f"spike-client: {host}:{port} {WEB}: ")


def test_a_web_server_on_the_pipes_own_port_is_another_program() -> None:
    from spike.cli._client import _is_ok_reply
    from spike.errors import PipeError

    with pytest.raises(
        PipeError, match=r"^127\.0\.0\.1:3000 answered like a web server"
    ) as caught:
        _is_ok_reply("hi", b"<!doctype html>", "127.0.0.1:3000", 3000)
    assert "another program has port 3000: start spike-server with another --port" in str(
        caught.value
    )


@pytest.mark.parametrize(
    ("reply", "shown"),
    [
        (b"220 mail.example.com ESMTP ready\n", "'220 mail.example.com ESMTP ready'"),
        (b"HI\n", "'HI'"),  # not the echo: the pipe sends plain text back as it came
        (b"caf\xff\n", "b'caf\\xff'"),
        (b'{"ok":true,"result":"hi"}\n', '\'{"ok":true,"result":"hi"}\''),
        # An error reply to plain text carries no id: plain text has none.
        (b'{"id":5,"ok":false,"error":{"code":"nope","message":"no"}}\n', '\'{"id":5'),
    ],
)
def test_plain_text_that_is_not_echoed_is_named_in_one_line(
    peers: Peers, reply: bytes, shown: str
) -> None:
    host, port = peers.start(peers.answer(reply, b"two\n"))
    result = run_client_bytes("--port", str(port), "-m", "hi", "-m", "two")
    assert result.returncode == 1
    assert len(result.stdout.splitlines()) == 2  # the session ends there
    assert_one_line_error(
        result.stderr.decode(),
        f"spike-client: {host}:{port} answered {shown}",
        "to plain text, which the pipe echoes: is that a pipe server?",
    )


def test_an_error_reply_to_plain_text_is_an_error_not_a_stranger(peers: Peers) -> None:
    reply = b'{"ok":false,"error":{"code":"line_too_long","message":"too long"}}\n'
    _, port = peers.start(peers.answer(reply))
    result = run_cli("spike.client", "--port", str(port), "hi")
    assert result.returncode == 1
    assert result.stdout.splitlines()[1] == f"Received: {reply.decode().strip()}"
    assert result.stderr == ""


def test_a_line_ending_in_a_carriage_return_is_echoed_without_it(server) -> None:
    # The server reads "\r\n" as the end of the line, so "hi\r" comes back "hi".
    result = run_cli("spike.client", "--port", str(server.address[1]), "-m", "hi\r\r")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Sent: hi\\x0d", "Received: hi"]


# --- JSON requests need protocol replies ----------------------------------------
@pytest.mark.parametrize(
    ("args", "reply", "says"),
    [
        (
            ["--op", "info"],
            b'{"id":1,"ok":true,"result":"caf\xff"}\n',
            'is not valid UTF-8: b\'{"id":1,"ok":true,"result":"caf\\xff"}\'',
        ),
        (["--json", "hi"], b"caf\xff\n", "is not valid UTF-8: b'caf\\xff'"),
        (["--op", "info"], b'["ok"]\n', "is not a pipe reply (not an object"),
        (["--json", "hi"], b'{"id":7,"ok":true,"result":{}}\n', "has id 7, but the request"),
        (
            ['{"op": "info"}'],
            b'{"id":1,"ok":true,"result":{}}\n',
            "has id 1, but the request had no id",
        ),
    ],
)
def test_a_json_request_with_a_reply_that_is_not_its_exits_1(
    peers: Peers, args: list[str], reply: bytes, says: str
) -> None:
    host, port = peers.start(peers.answer(reply))
    result = run_cli("spike.client", "--port", str(port), *args)
    assert result.returncode == 1
    assert result.stdout.splitlines()[1].startswith("Received: ")
    assert_one_line_error(result.stderr, f"reply from {host}:{port} {says}")


def test_a_bad_reply_ends_the_session(peers: Peers) -> None:
    # The next reply on that connection could be the rest of the bad one.
    _, port = peers.start(peers.answer(b"{}\n", b"{}\n"))
    result = run_cli("spike.client", "--port", str(port), "--json", "-m", "one", "-m", "two")
    assert result.returncode == 1
    assert [line.split(": ")[0] for line in result.stdout.splitlines()] == ["Sent", "Received"]


def test_an_error_reply_without_an_id_is_an_error_reply_not_a_broken_one(peers: Peers) -> None:
    reply = b'{"ok":false,"error":{"code":"bad_json","message":"not valid JSON"}}\n'
    _, port = peers.start(peers.answer(reply))
    result = run_cli("spike.client", "--port", str(port), "--op", "info")
    assert result.returncode == 1
    assert result.stderr == ""


def test_good_json_replies_still_exit_0(server) -> None:
    port = str(server.address[1])
    result = run_cli(
        "spike.client",
        "--port",
        port,
        "--op",
        "echo",
        "--param",
        "text=hi",
        "--json",
        "again",
        '{"op": "echo", "id": [1, {"k": "v"}], "text": "own id"}',
        '{"op": "echo", "text": "no id"}',
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


# --- arguments are checked where they are parsed --------------------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--op", "echo", "--param", "text=NaN"], "argument --param: 'text=NaN': NaN is not"),
        (["--op", "echo", "--param", "text=Infinity"], "Infinity is not a number JSON can carry"),
        (["--op", "echo", "--param", "n=-Infinity"], "-Infinity is not a number JSON can carry"),
        (["--op", "echo", "--param", "n=1e999"], "argument --param: 'n=1e999': 1e999 is not"),
        (["--op", "echo", "--param", 'n={"a": [1e999]}'], "1e999 is not a number JSON"),
        (["--op", "echo", "--param", "=1"], "argument --param: needs KEY=VALUE, not '=1'"),
        (["--op", "echo", "--param", "id=1"], "argument --param: cannot set 'id'"),
        (["--param", "a=1"], "argument --param: only used with --op NAME"),
        (["--timeout", "1e308", "hi"], "argument --timeout: seconds must be at most 86400"),
        (["--timeout", "inf", "hi"], "argument --timeout: seconds must be at most 86400"),
        (["--timeout", "nan", "hi"], "argument --timeout: not a number of seconds"),
        (["--timeout", "0", "hi"], "argument --timeout: seconds must be more than 0"),
        (["--host", "127.0.0.1:3000"], "use --host 127.0.0.1 --port 3000"),
        (["--host", "[::1]:3000"], "use --host ::1 --port 3000"),
        (["--host", "[localhost]"], "brackets go around an IPv6 address"),
        (["--host", "a..b"], "argument --host: 'a..b' is not a valid host name"),
        (["--host", ""], "argument --host: empty"),
        (["--port", "70000"], "argument --port: port must be an integer from 0 to 65535"),
        (["--port", "web"], "argument --port: not a port number: 'web'"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = run_cli("spike.client", *args)
    assert result.returncode == 2
    line = assert_one_line_error(result.stderr, "spike-client: error: ", needle)
    assert line.endswith("(see spike-client --help)")
    assert result.stdout == ""


def test_a_non_finite_value_can_be_sent_as_the_text_it_is(server) -> None:
    result = run_cli(
        "spike.client", "--port", str(server.address[1]), "--op", "echo", "--param", 'text="NaN"'
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == 'Received: {"id":1,"ok":true,"result":{"text":"NaN"}}'


@pytest.mark.skipif(sys.platform == "win32", reason="Windows passes arguments as UTF-16")
@pytest.mark.parametrize(
    ("args", "where"),
    [
        ([b"caf\xff"], "argument WORD"),
        ([b"-m", b"caf\xff"], "argument -m/--message"),
        ([b"--op", b"\xffinfo"], "argument --op"),
        ([b"--op", b"echo", b"--param", b"text=caf\xe9"], "argument --param"),
        ([b"--host", b"h\xffst", b"hi"], "argument --host"),
    ],
)
def test_an_argument_that_is_not_utf8_is_one_line_and_exit_2(
    args: list[bytes], where: str
) -> None:
    result = run_client_bytes(*args)
    assert result.returncode == 2
    assert_one_line_error(
        result.stderr.decode(), f"spike-client: error: {where}: b'", "is not valid UTF-8 text"
    )


def test_a_bracketed_ipv6_host_is_named_once_in_brackets() -> None:
    port = free_port()
    result = run_cli("spike.client", "--host", "[::1]", "--port", str(port), "hi")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"cannot connect to [::1]:{port}: ")
    assert "[[" not in result.stderr


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("host", ["[::1]", "::1"])
def test_an_ipv6_host_with_or_without_brackets_connects(peers: Peers, host: str) -> None:
    _, port = peers.start(peers.answer(b"hi\n"), host="::1")
    result = run_cli("spike.client", "--host", host, "--port", str(port), "hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["Sent: hi", "Received: hi"]


# --- standard input and output in other encodings ------------------------------
@pytest.mark.parametrize("io_encoding", [None, "utf-8", "cp1252"])
def test_stdin_lines_that_are_not_utf8_are_reported_and_skipped(
    server, io_encoding: str | None
) -> None:
    env = {} if io_encoding is None else {"PYTHONIOENCODING": io_encoding}
    result = run_client_bytes(
        "--port", str(server.address[1]), input=b"hi\n\xff\ncaf\xc3\xa9\r\nend\xe9\n", env=env
    )
    stderr = result.stderr.decode()
    assert "Traceback" not in stderr
    assert stderr.splitlines() == [
        "spike-client: input line 2 is not valid UTF-8 (byte 0xff at position 0); not sent",
        "spike-client: input line 4 is not valid UTF-8 (byte 0xe9 at position 3); not sent",
    ]
    assert result.stdout.decode(io_encoding or "utf-8").splitlines() == [
        "Sent: hi",
        "Received: hi",
        "Sent: café",
        "Received: café",
    ]
    assert result.returncode == 1


def test_a_utf8_byte_order_mark_does_not_reach_the_server(server) -> None:
    result = run_client_bytes(
        "--port", str(server.address[1]), input=b'\xef\xbb\xbf{"op": "echo", "text": "x"}\n'
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines()[0] == 'Sent: {"op": "echo", "text": "x"}'


@pytest.mark.parametrize("encoding", ["cp1252", "ascii"])
def test_a_reply_the_console_cannot_show_is_escaped_not_a_traceback(server, encoding: str) -> None:
    result = run_client_bytes(
        "--port",
        str(server.address[1]),
        "snow \u2603 clef \U0001d11e",
        env={"PYTHONIOENCODING": encoding},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert result.stdout.decode(encoding).splitlines() == [
        "Sent: snow \\u2603 clef \\U0001d11e",
        "Received: snow \\u2603 clef \\U0001d11e",
    ]


# --- the parser over arbitrary argument lists -----------------------------------
FLAGS = ["--host", "--port", "--timeout", "--json", "--op", "--param", "-m", "-h", "--", "-"]
VALUES = [
    "NaN",
    "-Infinity",
    "1e999",
    "1e308",
    "text=NaN",
    "x=[1e999]",
    "[::1]",
    "::1",
    "[::1]:3000",
    "127.0.0.1:80",
    "a..b",
    "caf\udcff",
    "\ud800",
    "=",
    "id=1",
    "0",
    "-1",
    "",
]
# A lone surrogate is how POSIX hands Python argument bytes that are not
# UTF-8 (U+DC80-U+DCFF, "surrogateescape"), and a Windows command line can
# hold others. Hypothesis' own text leaves them out, so some texts get one.
SURROGATE = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
ANY_TEXT = st.one_of(
    st.text(max_size=30),
    st.tuples(st.text(max_size=10), SURROGATE, st.text(max_size=10)).map("".join),
)
ARGUMENT = st.one_of(st.sampled_from(FLAGS), st.sampled_from(VALUES), ANY_TEXT)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ARGUMENT, max_size=8))
def test_the_argument_parser_only_ever_exits(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            args = _parse_client_args(argv)
        except SystemExit as exc:
            assert exc.code in (0, 2)
            return
    # Whatever the parser lets through can be sent as it is.
    for text in [args.host, *args.messages, args.op_line or ""]:
        text.encode()
    assert 0 < args.timeout <= MAX_TIMEOUT and math.isfinite(args.timeout)
    assert 0 <= args.port <= 65535
    assert (args.op_line is None) == (args.op is None) and (
        args.param == [] or args.op is not None
    )


@pytest.mark.skipif(sys.platform == "win32", reason="a pseudo-terminal is POSIX")
@pytest.mark.parametrize("io_encoding", ["utf-8", "utf-8:surrogateescape"])
def test_typed_lines_that_are_not_utf8_are_reported_and_the_session_goes_on(
    server, io_encoding: str
) -> None:
    # A terminal in another encoding: input() either fails to decode the
    # line (strict) or hands it over with lone surrogates (surrogateescape).
    import pty  # POSIX only

    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spike.client", "--port", str(server.address[1])],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=ROOT,
        env={**cli_env(), "PYTHONIOENCODING": io_encoding},
    )
    os.close(terminal)
    seen = bytearray()

    def read_until(needle: bytes) -> None:
        deadline = time.monotonic() + WAIT
        while needle not in seen:
            assert time.monotonic() < deadline, bytes(seen)
            if select.select([controller], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):  # EIO once the client has exited
                    seen.extend(os.read(controller, 4096))

    try:
        for typed, answer in [
            (b"hi\n", b"Received: hi"),
            (b"caf\xff\n", b"input line 2 is not valid UTF-8 (byte 0xff at position 3)"),
            (b"ok\n", b"Received: ok"),
        ]:
            read_until(b"> ")
            del seen[:]
            os.write(controller, typed)
            read_until(answer)
        read_until(b"> ")
        os.write(controller, b"\x04")  # Ctrl+D
        assert proc.wait(WAIT) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        os.close(controller)
    assert b"Traceback" not in seen


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_waiting_for_a_reply_exits_130_at_once(peers: Peers) -> None:
    _, port = peers.start(peers.silent())
    # Ctrl+C's default handler, whatever this test process inherited.
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from spike.cli import client_main as main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(port), "--timeout", "60", "hello"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"Sent: hello\n"
        time.sleep(0.6)  # well into the wait for the reply
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 130
        assert time.monotonic() - started < 1.0
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=WAIT)
    assert stderr == b"\n"


# --- what a reply shows on the terminal ----------------------------------------------
def test_a_reply_cannot_drive_the_terminal(server) -> None:
    """ESC [2J clears a screen, OSC 0 retitles the window, BEL rings and a bare
    CR overwrites the line: spike-client shows them escaped, as the server's log does."""
    message = "before\x1b[2J\x1b]0;owned\x07 over\rwrite\x85\u2028end"
    result = run_client_bytes("--port", str(server.address[1]), message.encode())
    assert result.returncode == 0, result.stderr
    shown = "before\\x1b[2J\\x1b]0;owned\\x07 over\\x0dwrite\\x85\\u2028end"
    assert result.stdout.decode().splitlines() == [f"Sent: {shown}", f"Received: {shown}"]
    for control in (b"\x1b", b"\x07", b"\r", "\x85".encode(), "\u2028".encode()):
        assert control not in result.stdout


def test_raw_prints_the_reply_bytes_for_scripts(server) -> None:
    message = "tab\there\x1b[2J\u2028é"
    port = str(server.address[1])
    result = run_client_bytes("--port", port, "--raw", message.encode(), "--op", "echo")
    assert result.returncode == 1  # --op echo without text: an error reply, still printed
    lines = result.stdout.split(b"\n")
    assert lines[0].startswith(b'{"id":1,"ok":false,"error":{"code":"bad_request"')
    assert lines[1:] == [message.encode(), b""]


def test_a_server_that_sends_an_extra_line_ends_the_session_in_one_line(peers: Peers) -> None:
    host, port = peers.start(peers.answer(b"one\n\n", b"two\n"))
    result = run_cli("spike.client", "--port", str(port), "-m", "one", "-m", "two")
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["Sent: one", "Received: one", "Sent: two"]
    assert_one_line_error(
        result.stderr,
        f"spike-client: bad_request: {host}:{port} sent a line that answers no request: ''",
    )
