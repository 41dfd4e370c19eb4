"""The tutorial's example files, run for real so the page never drifts.

docs/spike/tutorial.md includes docs/examples/*.py and *.js verbatim and
shows their output; these tests run the same files against a real service
on an ephemeral port and check the output the page shows.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_file

from spike import PipeError, RemoteError, running_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
TUTORIAL = ROOT / "docs" / "spike" / "tutorial.md"
TIMEOUT = 10
SENTENCE = "the cat saw the other cat"
# What the tutorial page shows for SENTENCE.
SHOWN_OUTPUT = "6 words, 25 characters\n  the: 2\n  cat: 2\n  saw: 1\n"


def _load(name: str) -> ModuleType:
    return load_file(EXAMPLES / f"{name}.py", f"example_{name}")


service = _load("word_count_service")
teammate = _load("teammate_client")


@pytest.fixture
def word_count_server():
    """The example's ops served in-process on a free port."""
    with running_server(ops=service.ops, port=0, poll_interval=0.05) as server:
        yield server.address


TOKEN = "a-token-for-the-teammate"


@pytest.fixture
def guarded_port():
    """The service as a teammate on another computer meets it: every
    interface, with a token (reached here through 127.0.0.1)."""
    with running_server(
        ops=service.ops, host="0.0.0.0", port=0, token=TOKEN, poll_interval=0.05
    ) as server:
        yield server.address[1]


def _env(token: str | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if token is not None:
        env["SPIKE_TOKEN"] = token
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run(args: list[str], token: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        env=_env(token),
        stdin=subprocess.DEVNULL,
    )


def test_tutorial_includes_the_example_files():
    page = TUTORIAL.read_text(encoding="utf-8")
    for name in ("word_count_service.py", "teammate_client.py", "teammate_client.js"):
        assert f'--8<-- "docs/examples/{name}"' in page


def test_word_count_op_counts_and_ranks(word_count_server):
    host, port = word_count_server
    result = teammate.count_words(SENTENCE, host, port)
    assert result == {
        "words": 6,
        "characters": 25,
        "most_common": [
            {"word": "the", "count": 2},
            {"word": "cat", "count": 2},
            {"word": "saw", "count": 1},
        ],
    }


def test_default_ops_are_still_there(word_count_server):
    from spike import Client

    with Client(*word_count_server, timeout=TIMEOUT) as client:
        assert client.request("echo", text="hi") == {"text": "hi"}
        assert client.send_text("A message from CS361") == "A message from CS361"


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "missing parameter 'text'"),
        ({"text": 42}, '"text" must be a string'),
        ({"text": "a b", "top": -1}, '"top" must be a whole number, 0 or more'),
        ({"text": "a b", "top": True}, '"top" must be a whole number, 0 or more'),
    ],
)
def test_bad_parameters_are_bad_request_replies(word_count_server, params, message):
    from spike import Client

    with Client(*word_count_server, timeout=TIMEOUT) as client:
        with pytest.raises(RemoteError) as caught:
            client.request("word_count", **params)
        assert caught.value.code == "bad_request"
        assert caught.value.message == message
        # The connection and the service survive a bad request.
        assert client.request("word_count", text="ok")["words"] == 1


def test_raw_json_line_gets_the_reply_the_page_shows(word_count_server):
    # What a non-Python teammate (or `nc`) sends: one JSON line over TCP.
    request = b'{"op": "word_count", "text": "hello hello world"}\n'
    with socket.create_connection(word_count_server, timeout=TIMEOUT) as sock:
        sock.sendall(request)
        reply = sock.makefile("rb").readline()
    shown = (
        '{"ok":true,"result":{"words":3,"characters":17,"most_common":'
        '[{"word":"hello","count":2},{"word":"world","count":1}]}}'
    )
    assert reply.decode() == shown + "\n"
    assert shown in TUTORIAL.read_text(encoding="utf-8")


def test_teammate_client_program_prints_what_the_page_shows(word_count_server):
    _, port = word_count_server
    done = _run(
        [sys.executable, str(EXAMPLES / "teammate_client.py"), "--port", str(port), SENTENCE]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == SHOWN_OUTPUT
    page = TUTORIAL.read_text(encoding="utf-8")
    assert f'"{SENTENCE}"\n{SHOWN_OUTPUT}' in page


def test_teammate_client_reports_a_missing_service_in_one_line():
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _run([sys.executable, str(EXAMPLES / "teammate_client.py"), "--port", str(port), "x"])
    assert done.returncode == 1
    assert done.stderr.startswith(f"Could not use the service at 127.0.0.1:{port}:")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_node_client_talks_to_the_python_service(word_count_server):
    _, port = word_count_server
    done = _run(["node", str(EXAMPLES / "teammate_client.js"), str(port), SENTENCE])
    assert done.returncode == 0, done.stderr
    assert done.stdout == SHOWN_OUTPUT


@pytest.mark.parametrize("language", ["python", "node"])
def test_the_teammate_programs_send_the_token_first(guarded_port, language):
    """SPIKE_TOKEN set: the service on another computer answers as on this one;
    a wrong token is one line and exit status 1."""
    if language == "node" and shutil.which("node") is None:
        pytest.skip("Node.js is not installed")
    program = {
        "python": [sys.executable, str(EXAMPLES / "teammate_client.py"), "--port"],
        "node": ["node", str(EXAMPLES / "teammate_client.js")],
    }[language]
    args = [*program, str(guarded_port), SENTENCE]
    done = _run(args, token=TOKEN)
    assert done.returncode == 0, done.stderr
    assert done.stdout == SHOWN_OUTPUT
    for token in ("wrong", None):
        refused = _run(args, token=token)
        assert refused.returncode == 1
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "unauthorized" in refused.stderr and "Traceback" not in refused.stderr
        assert "owner for the one it printed at start" in refused.stderr


def test_the_python_teammate_takes_the_token_as_an_option_too(guarded_port):
    program = [sys.executable, str(EXAMPLES / "teammate_client.py")]
    done = _run([*program, "--port", str(guarded_port), "--token", TOKEN, SENTENCE])
    assert done.returncode == 0, done.stderr
    assert done.stdout == SHOWN_OUTPUT


def _default_sigint() -> None:  # runs in the child, before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)


SERVE_COMMAND = "uv run spike-server --ops docs/examples/word_count_service.py:ops --port 3001"


def test_service_is_served_by_spike_server_until_ctrl_c():
    """The service as the page starts it: `spike-server --ops FILE:ops`, its own
    process (port 0 here, not 3001), then Ctrl+C."""
    assert SERVE_COMMAND in TUTORIAL.read_text(encoding="utf-8")
    kwargs = {}
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
    elif signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        # Started from a background job: the child would inherit "ignore
        # Ctrl+C"; give it the default so the test can press Ctrl+C.
        kwargs["preexec_fn"] = _default_sigint
    target = "docs/examples/word_count_service.py:ops"
    proc = subprocess.Popen(
        [sys.executable, "-m", "spike.server", "--ops", target, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        env=_env(),
        cwd=ROOT,
        **kwargs,
    )
    try:
        first = proc.stdout.readline()
        match = re.fullmatch(
            r"Serving on 127\.0\.0\.1:(\d+) \(ops from docs/examples/word_count_service\.py:ops: "
            r"define, define_many, echo, info, stats, word_count; press Ctrl\+C to stop\)\n",
            first,
        )
        assert match, first + proc.stderr.read()
        port = int(match[1])
        assert teammate.count_words(SENTENCE, "127.0.0.1", port)["words"] == 6
        # Wait for the server to log the closed connection (a real condition).
        seen = []
        while not any(line.startswith("Connection closed:") for line in seen):
            line = proc.stdout.readline()
            assert line, f"service output ended early: {seen}"
            seen.append(line)
        assert any(line.startswith("Received: {") for line in seen)
        proc.send_signal(signal.CTRL_BREAK_EVENT if sys.platform == "win32" else signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    if sys.platform != "win32":
        assert proc.returncode == 0
        assert out.strip().endswith("Server stopped.")
        assert "Traceback" not in err


def test_the_op_that_waits_keeps_no_one_else_waiting(word_count_server):
    """Three `define` calls from three clients, and a `define_many` of three
    words: each takes about one lookup (0.2 s), not the sum."""
    import concurrent.futures
    import time

    from spike import Client

    host, port = word_count_server

    def define(word: str) -> dict:
        with Client(host, port, timeout=TIMEOUT) as client:
            return client.request("define", word=word)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(define, ["cat", "pipe", "Cat"]))
    with Client(host, port, timeout=TIMEOUT) as client:
        many = client.request("define_many", words=["cat", "pipe", "dog"])
        with pytest.raises(RemoteError) as unknown:
            client.request("define", word="dog")
    took = time.monotonic() - started
    definitions = service.DEFINITIONS
    assert [r["definition"] for r in results] == [definitions[w] for w in ("cat", "pipe", "cat")]
    assert many == {**{w: service.DEFINITIONS[w] for w in ("cat", "pipe")}, "dog": None}
    assert unknown.value.code == "bad_request"
    assert took < 5 * service.LOOKUP_SECONDS, f"took {took:.2f} s"  # one at a time: 7x


def test_request_id_comes_back_as_the_page_describes(word_count_server):
    request = {"op": "word_count", "id": 1, "text": SENTENCE, "top": 3}
    with socket.create_connection(word_count_server, timeout=TIMEOUT) as sock:
        sock.sendall(json.dumps(request).encode() + b"\n")
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["id"] == 1 and reply["ok"] is True
    assert reply["result"]["words"] == 6
    # The page's "one except PipeError is enough" relies on this.
    assert issubclass(RemoteError, PipeError)


# --- The request/reply examples on the protocol page ----------------------

PROTOCOL_PAGE = ROOT / "docs" / "spike" / "protocol.md"
# Replies whose values change from run to run: compare their shape only.
_VARYING_OPS = {"info", "stats"}


def _protocol_examples() -> list[tuple[str, str]]:
    lines = PROTOCOL_PAGE.read_text(encoding="utf-8").splitlines()
    pairs = []
    for sent, answer in itertools.pairwise(lines):
        if sent.startswith("→ ") and answer.startswith("← "):
            pairs.append((sent[2:], answer[2:]))
    return pairs


def test_protocol_page_has_examples():
    sent = [request for request, _ in _protocol_examples()]
    assert "A message from CS361" in sent
    for op in ("echo", "info", "stats"):
        assert any(f'"op": "{op}"' in request for request in sent), op


@pytest.mark.parametrize("request_line, shown", _protocol_examples())
def test_protocol_page_example_matches_the_server(request_line, shown):
    with (
        running_server(port=0, poll_interval=0.05) as server,
        socket.create_connection(server.address, timeout=TIMEOUT) as sock,
    ):
        sock.sendall(request_line.encode() + b"\n")
        reply = sock.makefile("rb").readline().decode()
    assert reply.endswith("\n")
    reply = reply[:-1]
    if not shown.startswith("{"):
        assert reply == shown
        return
    got, expected = json.loads(reply), json.loads(shown)
    if expected.get("error", {}).get("code") == "bad_json":
        # The parser's wording differs between json backends; the code does not.
        assert got["error"]["code"] == "bad_json" and got.keys() == expected.keys()
    elif json.loads(request_line).get("op") in _VARYING_OPS:
        assert got.keys() == expected.keys()
        assert got["result"].keys() == expected["result"].keys()
    else:
        assert got == expected


# --- The error lines the demonstration page shows -----------------------------

DEMO_PAGE = ROOT / "docs" / "spike" / "demo.md"


def test_demo_page_shows_the_real_port_in_use_and_refused_messages():
    with running_server(port=0) as busy:
        port = busy.address[1]
        in_use = _run([sys.executable, "-m", "spike.server", "--port", str(port)])
    refused = _run([sys.executable, "-m", "spike.client", "--port", str(port), "hi"])
    page = DEMO_PAGE.read_text(encoding="utf-8")
    for done in (in_use, refused):
        assert done.returncode == 1
        # The page shows the default port; the message is otherwise the same.
        shown = done.stderr.strip().replace(f":{port}:", ":3000:")
        assert shown in page, shown


DEMO = ROOT / "docs" / "spike" / "demo.md"


def test_tutorial_cli_command_calls_the_new_op(word_count_server):
    """The `spike-client --op word_count ...` command on the page, run as shown."""
    import shlex

    page = TUTORIAL.read_text(encoding="utf-8")
    command = re.search(r"^uv run spike-client (.*--op word_count.*)$", page, re.M)
    assert command, "the tutorial no longer shows a spike-client --op word_count command"
    _, port = word_count_server
    args = shlex.split(re.sub(r"--port \d+", f"--port {port}", command.group(1)))
    done = _run([sys.executable, "-m", "spike.client", *args])
    assert done.returncode == 0, done.stderr
    sent, received = done.stdout.splitlines()
    assert sent.startswith("Sent: ") and '"op":"word_count"' in sent
    reply = json.loads(received.removeprefix("Received: "))
    assert reply["ok"] is True and reply["result"]["words"] == 6


def test_demo_json_flag_sends_the_line_the_page_shows(word_count_server):
    page = DEMO.read_text(encoding="utf-8")
    shown = re.search(
        r'`uv run spike-client --json "(?P<text>[^"]+)"` sends\s+`(?P<line>\{[^`]+\})`', page
    )
    assert shown, "the demo page no longer shows what --json sends"
    _, port = word_count_server
    done = _run(
        [sys.executable, "-m", "spike.client", "--port", str(port), "--json", shown["text"]]
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"Sent: {shown['line']}"
