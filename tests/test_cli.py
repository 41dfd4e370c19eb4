"""The command-line tools as real subprocesses: output formats, exit codes, errors."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, WAIT, free_port, run_cli
from peers import ipv6_loopback

from spike import Server
from spike.cli import serving_port


def assert_one_line_error(stderr: str, *needles: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0]


# --- spike-server ---------------------------------------------------------------
def test_server_prints_its_real_port_then_one_line_per_event(server_process) -> None:
    proc = server_process("--port", "0")
    assert proc.first_line.endswith(" (press Ctrl+C to stop)"), proc.first_line
    assert serving_port(proc.first_line) == ("127.0.0.1", proc.port)
    port = proc.port
    assert port > 0
    result = run_cli("spike.client", "--port", str(port), "A message from CS361")
    assert result.returncode == 0, result.stderr
    opened = proc.next_line()
    assert re.fullmatch(r"Connection opened: 127\.0\.0\.1:\d+", opened)
    peer = opened.split(": ", 1)[1]
    assert proc.next_line() == "Received: A message from CS361"
    assert proc.next_line() == f"Connection closed: {peer} (1 message)"


def test_quiet_server_logs_no_events(server_process) -> None:
    proc = server_process("--port", "0", "--quiet")
    assert serving_port(proc.first_line) is not None
    assert run_cli("spike.client", "--port", str(proc.port), "hi").returncode == 0
    proc.proc.kill()
    assert proc.rest() == []


def test_quiet_server_still_prints_errors_on_stderr(server_process) -> None:
    proc = server_process("--port", "0", "--quiet", "--max-line-bytes", "10")
    with socket.create_connection(("127.0.0.1", proc.port), timeout=WAIT) as sock:
        local = "{}:{}".format(*sock.getsockname()[:2])
        sock.sendall(b"more than ten bytes\n")
        reply = sock.makefile("rb").readline()
    assert b'"line_too_long"' in reply
    assert proc.next_error_line() == (
        f"Error: {local} sent a line longer than 10 bytes; closing the connection"
    )
    proc.proc.kill()
    assert proc.rest() == []


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_stops_the_server_within_a_second(server_process) -> None:
    proc = server_process("--port", "0")
    with socket.create_connection(("127.0.0.1", proc.port), timeout=WAIT) as sock:
        sock.sendall(b"hello\n")
        assert sock.recv(1024) == b"hello\n"
        proc.wait_for_line("Received: hello")
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)
        returncode = proc.proc.wait(timeout=WAIT)
        elapsed = time.monotonic() - started
    assert returncode == 0
    assert elapsed < 1.0
    rest = proc.rest()
    assert rest[-1] == "Server stopped."
    assert any(line.startswith("Connection closed:") for line in rest)
    assert not any("Traceback" in line for line in proc.error_rest())


@pytest.mark.skipif(sys.platform == "win32", reason="no RLIMIT_NOFILE on Windows")
def test_server_lifts_its_open_file_limit_for_many_clients() -> None:
    code = (
        "import resource, sys\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from spike._limits import raise_open_file_limit\n"
        "raise_open_file_limit(65536)\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20, cwd=ROOT
    )
    import resource

    soft, hard = (int(x) for x in result.stdout.split())
    assert soft == (65536 if hard == resource.RLIM_INFINITY else min(65536, hard))


def test_port_in_use_is_one_line_and_exit_1() -> None:
    with Server(port=0) as holder:
        port = holder.address[1]
        result = run_cli("spike.server", "--port", str(port))
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"127.0.0.1:{port}", "in use")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        ["--bogus"],
        ["--port", "99999"],
        ["--port", "abc"],
        ["--flush-after", "-1"],
        ["--max-line-bytes", "0"],
    ],
)
def test_server_bad_flags(args: list[str]) -> None:
    result = run_cli("spike.server", *args)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "spike-server: error:")


@pytest.mark.parametrize(
    ("host", "needle"),
    [
        ("127.0.0.1:3000", "'127.0.0.1:3000' includes a port: use --host 127.0.0.1 --port 3000"),
        ("[::1]:3000", "'[::1]:3000' includes a port: use --host ::1 --port 3000"),
        ("", "argument --host: empty"),
    ],
)
def test_server_and_client_read_a_host_the_same_way(host: str, needle: str) -> None:
    for module in ("spike.server", "spike.client"):
        result = run_cli(module, "--host", host, "--port", "0", "hi")
        assert result.returncode == 2, (module, result.stderr)
        assert_one_line_error(result.stderr, needle)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_server_takes_an_ipv6_host_in_brackets_as_the_client_does(server_process) -> None:
    proc = server_process("--host", "[::1]", "--port", "0")
    assert proc.first_line.startswith("Serving on [::1]:"), proc.first_line
    assert proc.first_line.endswith(" (press Ctrl+C to stop)"), proc.first_line
    result = run_cli("spike.client", "--host", "[::1]", "--port", str(proc.port), "hi")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("host", ["0", "0.0.0.0"])
def test_a_wildcard_host_says_so_in_the_start_line(server_process, host: str) -> None:
    """``--host 0`` is 0.0.0.0: every network interface, which the start line
    says, with the token a teammate needs (tests/test_token.py has the rest)."""
    proc = server_process("--host", host, "--port", "0")
    assert re.fullmatch(
        rf"Serving on 0\.0\.0\.0:{proc.port} \(every network interface: a teammate connects "
        rf"with spike-client --host \S+ --port {proc.port} --token [0-9a-f]{{32}}; "
        r"press Ctrl\+C to stop\)",
        proc.first_line,
    ), proc.first_line


# --- spike-client ---------------------------------------------------------------
def test_client_sends_unquoted_words_as_one_message(server) -> None:
    """`spike-client A message from CS361` is what a student types: one
    message, the words joined by spaces as `echo` joins them."""
    port = str(server.address[1])
    result = run_cli(
        "spike.client", "--port", port, "A", "message", "--timeout", "5", "from", "CS361"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Sent: A message from CS361",
        "Received: A message from CS361",
    ]


def test_client_sends_one_message_per_m(server) -> None:
    port = str(server.address[1])
    result = run_cli("spike.client", "--port", port, "-m", "one", "--message", "two words")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "Sent: one",
        "Received: one",
        "Sent: two words",
        "Received: two words",
    ]


def test_client_refuses_words_and_m_together_before_connecting() -> None:
    result = run_cli("spike.client", "--port", str(free_port()), "one", "-m", "two")
    assert result.returncode == 2
    assert_one_line_error(
        result.stderr,
        "spike-client: error: argument -m/--message: give the message as words or with -m, "
        "not both",
    )


def test_client_sends_each_line_of_a_message(server) -> None:
    port = str(server.address[1])
    result = run_cli(
        "spike.client",
        "--port",
        port,
        *("-m", "one\r\ntwo\n", "-m", "three\u2028same message", "-m", ""),
    )
    assert result.returncode == 0
    assert result.stdout.split("\n")[:-1:2] == [
        "Sent: one",
        "Sent: two",
        "Sent: three\\u2028same message",  # shown escaped: a line separator
        "Sent: ",
    ]


def test_client_json_modes(server) -> None:
    port = str(server.address[1])
    result = run_cli(
        "spike.client", "--port", port, "--json", "-m", "hi", "-m", '{"op": "echo", "text": "raw"}'
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        'Sent: {"op":"echo","id":1,"text":"hi"}',
        'Received: {"id":1,"ok":true,"result":{"text":"hi"}}',
        'Sent: {"op": "echo", "text": "raw"}',
        'Received: {"ok":true,"result":{"text":"raw"}}',
    ]
    result = run_cli("spike.client", "--port", port, "--op", "echo", "--param", "text=via op")
    assert (
        result.stdout.splitlines()[1] == 'Received: {"id":1,"ok":true,"result":{"text":"via op"}}'
    )
    info = run_cli("spike.client", "--port", port, "--op", "info")
    assert info.returncode == 0 and '"server":"spike"' in info.stdout


def test_client_error_reply_exits_1(server) -> None:
    result = run_cli("spike.client", "--port", str(server.address[1]), "--op", "no_such_op")
    assert result.returncode == 1
    assert '"code":"unknown_op"' in result.stdout.splitlines()[1]


def test_client_reads_stdin_lines(server) -> None:
    result = run_cli("spike.client", "--port", str(server.address[1]), input="first\nsecond\r\n")
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "Sent: first",
        "Received: first",
        "Sent: second",
        "Received: second",
    ]


def test_client_without_a_server_is_one_line_and_exit_1() -> None:
    port = free_port()
    result = run_cli("spike.client", "--port", str(port), "hello")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"127.0.0.1:{port}", "is the server running?")


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="Linux routes a connect to 0.0.0.0 to this machine",
)
def test_client_copying_the_servers_0_0_0_0_gets_a_one_line_hint() -> None:
    port = free_port()
    result = run_cli("spike.client", "--host", "0.0.0.0", "--port", str(port), "hello")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"0.0.0.0:{port}", '"every interface"', "127.0.0.1")


def test_client_timeout_is_one_line_and_exit_1() -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog) but never answers
        port = silent.getsockname()[1]
        result = run_cli("spike.client", "--port", str(port), "--timeout", "0.3", "hello")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"127.0.0.1:{port}", "0.3")


@pytest.mark.parametrize(
    "args", [["--nope"], ["--port", "-1"], ["--timeout", "0"], ["--param", "a=1"]]
)
def test_client_bad_flags(args: list[str]) -> None:
    result = run_cli("spike.client", *args)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "spike-client: error:")


# --- python -m spike and the console scripts ---------------------------------------
def test_demo_runs_both_sides() -> None:
    result = run_cli("spike")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"\[server\] Serving on 127\.0\.0\.1:\d+", lines[0])
    assert re.fullmatch(r"\[server\] Connection opened: 127\.0\.0\.1:\d+", lines[1])
    assert lines[2:5] == [
        "[client] Sent: A message from CS361",
        "[server] Received: A message from CS361",
        "[client] Received: A message from CS361",
    ]
    assert re.fullmatch(r"\[server\] Connection closed: 127\.0\.0\.1:\d+ \(1 message\)", lines[5])
    assert lines[6:] == ["[server] Server stopped."]
    assert result.stderr == ""


@pytest.mark.parametrize("script", ["spike-server", "spike-client"])
def test_console_scripts_are_installed(script: str) -> None:
    path = shutil.which(script, path=str(Path(sys.executable).parent))
    if path is None:
        pytest.skip(f"{script} is not installed next to {sys.executable}")
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: {script}")


# --- the README's commands, run as shown ------------------------------------------
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _readme_commands(program: str, section: str) -> list[tuple[list[str], str]]:
    """Each ``uv run PROGRAM ARGS  # ...`` line of a README section: its
    arguments and the comment that says what it prints."""
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [
        (shlex.split(args), comment)
        for args, comment in re.findall(rf"^uv run {program} (.*?)\s+# (.*)$", body, re.M)
    ]


def test_the_readmes_spike_commands_print_what_it_says(server) -> None:
    commands = _readme_commands("spike-client", "Run the spike")
    assert [args[:2] for args, _ in commands] == [["A", "message"], ["--op", "info"]]
    port = str(server.address[1])
    for args, comment in commands:
        result = run_cli("spike.client", "--port", port, *args)
        assert result.returncode == 0, result.stderr
        shown = re.search(r"Received: (.+)$", comment)
        if shown:
            assert result.stdout.splitlines()[1] == f"Received: {shown[1]}"


def _server_has_ops() -> bool:
    return "--ops" in run_cli("spike.server", "--help").stdout


@pytest.mark.skipif(not _server_has_ops(), reason="spike-server --ops lands with issue 25")
def test_the_readmes_service_runs_as_shown(server_process, tmp_path: Path) -> None:
    code = re.search(r"Save as `my_service.py`.*?```python\n(.*?)```", README, re.S)
    assert code, "the README no longer shows my_service.py"
    service = tmp_path / "my_service.py"
    service.write_text(code[1], encoding="utf-8")
    ((server_args, _),) = _readme_commands(
        "spike-server", "Use the pipe for your own microservice"
    )
    assert server_args == ["--ops", "my_service.py:ops"]
    proc = server_process("--port", "0", "--ops", f"{service}:ops")
    ((client_args, comment),) = _readme_commands(
        "spike-client", "Use the pipe for your own microservice"
    )
    result = run_cli("spike.client", "--port", str(proc.port), *client_args)
    assert result.returncode == 0, result.stderr
    shown = comment.split("Received: ", 1)[1].removesuffix("{...}}")
    assert result.stdout.splitlines()[1].startswith(f"Received: {shown}")
