"""The Java teammate on the tutorial page (docs/examples/TeammateClient.java).

The program is compiled with the JDK's `javac` and run against the real
word-count service on a free port, as the page shows it. Where no JDK is
installed those tests are skipped with the reason (CI installs Debian's
default-jdk-headless). The server's side of Java's Windows line endings
(`println` sends "\\r\\n" there) is tested without Java, over a raw socket.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import load_file

from spike import running_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "TeammateClient.java"
TUTORIAL = ROOT / "docs" / "spike" / "tutorial.md"
TIMEOUT = 30  # a cold JVM start on a busy CI machine takes seconds
SENTENCE = "the cat saw the other cat"
PAGE_COMMAND = f'java docs/examples/TeammateClient.java 3001 "{SENTENCE}"'

JDK_MISSING = next(
    (
        f"`{tool}` not found: install a JDK to run the Java example "
        "(Debian/Ubuntu: apt-get install default-jdk-headless; .ci/run does)"
        for tool in ("javac", "java")
        if shutil.which(tool) is None
    ),
    None,
)
needs_jdk = pytest.mark.skipif(JDK_MISSING is not None, reason=str(JDK_MISSING))


def _word_count_ops() -> object:
    example = ROOT / "docs" / "examples" / "word_count_service.py"
    return load_file(example, "example_word_count_service_for_java").ops


@pytest.fixture
def word_count_port() -> Iterator[int]:
    """The tutorial's word-count service, in-process on a free port."""
    with running_server(ops=_word_count_ops(), port=0, poll_interval=0.05) as server:
        yield server.address[1]


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TeammateClient compiled with every javac warning turned into an error."""
    if JDK_MISSING:
        pytest.skip(JDK_MISSING)
    out = tmp_path_factory.mktemp("java-classes")
    done = subprocess.run(
        ["javac", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d", str(out), str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "TeammateClient.class").is_file()
    return out


def java(
    *args: str, cwd: Path = ROOT, token: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `java args`, output decoded as UTF-8 (``token``: in SPIKE_TOKEN)."""
    env = {key: value for key, value in os.environ.items() if key != "JAVA_TOOL_OPTIONS"}
    if token is not None:
        env["SPIKE_TOKEN"] = token
    if sys.platform == "linux":
        # Java decodes its arguments in the locale's encoding (ASCII under C/POSIX).
        env["LC_ALL"] = "C.UTF-8"
    return subprocess.run(
        ["java", "-Dstdout.encoding=UTF-8", "-Dfile.encoding=UTF-8", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=TIMEOUT,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def shown_output() -> str:
    """The output the tutorial shows under the Java command (its tab is indented)."""
    page = TUTORIAL.read_text(encoding="utf-8")
    block = re.search(
        rf"^(?P<indent> *)\$ {re.escape(PAGE_COMMAND)}\n(?P<lines>(?:(?P=indent)[^`\n].*\n)+)",
        page,
        re.M,
    )
    assert block, f"the tutorial no longer shows `{PAGE_COMMAND}` and its output"
    indent = len(block["indent"])
    return "".join(line[indent:] + "\n" for line in block["lines"].splitlines())


def test_tutorial_has_a_java_tab_beside_node() -> None:
    page = TUTORIAL.read_text(encoding="utf-8")
    node, java_tab = page.find('=== "Node.js"'), page.find('=== "Java"')
    assert 0 <= node < java_tab, "the Java tab should follow the Node.js tab"
    include = page.find('    --8<-- "docs/examples/TeammateClient.java"', java_tab)
    assert include > java_tab
    assert "\\r\\n" in page[java_tab:] and "println" in page[java_tab:]


def test_server_treats_crlf_lines_like_lf_lines() -> None:
    """What Java's println sends on Windows gets the same replies as "\\n" lines."""
    request = json.dumps({"op": "echo", "id": 1, "text": "hi"})
    replies = {}
    for ending in (b"\n", b"\r\n"):
        with (
            running_server(port=0, poll_interval=0.05) as server,
            socket.create_connection(server.address, timeout=5) as sock,
        ):
            sock.sendall(b"A message from CS361" + ending + request.encode() + ending)
            reader = sock.makefile("rb")
            replies[ending] = [reader.readline(), reader.readline()]
    assert replies[b"\r\n"] == replies[b"\n"]
    plain, answer = replies[b"\r\n"]
    assert plain == b"A message from CS361\n"  # the \r is not part of the message
    assert json.loads(answer) == {"id": 1, "ok": True, "result": {"text": "hi"}}


@needs_jdk
def test_java_client_prints_what_the_page_shows(classes: Path, word_count_port: int) -> None:
    done = java("-cp", str(classes), "TeammateClient", str(word_count_port), SENTENCE)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown_output()


@needs_jdk
def test_the_page_command_runs_the_source_file_directly(word_count_port: int) -> None:
    """`java File.java` (Java 11+) as the page shows it, with the test's port."""
    done = java(str(EXAMPLE.relative_to(ROOT)), str(word_count_port), SENTENCE)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown_output()


@needs_jdk
def test_windows_line_endings_reach_the_server_and_work(
    classes: Path, word_count_port: int
) -> None:
    """With Windows' line separator, println sends "\\r\\n": the bytes and the replies."""
    received = bytearray()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)

        def answer_twice() -> None:
            # A stand-in service that records the bytes and answers each line.
            conn, _ = listener.accept()
            with conn, conn.makefile("rwb") as stream:
                for reply in (b"A message from CS361\n", b'{"id":1,"ok":true,"result":{}}\n'):
                    received.extend(stream.readline())
                    stream.write(reply)
                    stream.flush()

        thread = threading.Thread(target=answer_twice, daemon=True)
        thread.start()
        windows = ["-Dline.separator=\r\n", "-cp", str(classes), "TeammateClient"]
        recorded = java(*windows, str(listener.getsockname()[1]), SENTENCE)
        thread.join(TIMEOUT)
    assert recorded.returncode == 0, recorded.stderr
    first, second = bytes(received).split(b"\r\n", 1)
    assert first == b"A message from CS361"
    assert second.endswith(b"\r\n") and b"\n" not in second[:-2]
    assert json.loads(second)["text"] == SENTENCE

    # The real service answers those lines exactly as it answers "\n" ones.
    done = java(*windows, str(word_count_port), SENTENCE)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown_output()  # text mode reads "\r\n" as "\n"


@needs_jdk
def test_java_client_escapes_the_text_as_json(classes: Path, word_count_port: int) -> None:
    text = 'say "hi" \\ then\ttab, ünïcode 𝄞'
    done = java("-cp", str(classes), "TeammateClient", str(word_count_port), text)
    assert done.returncode == 0, done.stderr
    sent = done.stdout.splitlines()[2].removeprefix("Sent: ")
    assert json.loads(sent)["text"] == text
    reply = json.loads(done.stdout.splitlines()[3].removeprefix("Received: "))
    assert reply["ok"] is True and reply["result"]["characters"] == len(text)


@needs_jdk
def test_java_client_exits_1_on_an_error_reply(classes: Path) -> None:
    # The default ops have no word_count: the reply is an unknown_op error.
    with running_server(port=0, poll_interval=0.05) as server:
        done = java("-cp", str(classes), "TeammateClient", str(server.address[1]), SENTENCE)
    assert done.returncode == 1
    assert '"code":"unknown_op"' in done.stdout.splitlines()[-1]


@needs_jdk
def test_java_client_reports_a_missing_service_in_one_line(classes: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = java("-cp", str(classes), "TeammateClient", str(port))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr  # no stack trace
    assert lines[0].startswith(f"Could not use the service at 127.0.0.1:{port}: ")
    assert "Connection refused" in lines[0]


@needs_jdk
def test_java_client_sends_the_token_first(classes: Path) -> None:
    """A service on every interface with a token, as a teammate on another
    computer meets it: SPIKE_TOKEN set, the program prints what the page
    shows (the token line is not shown); a wrong one is one line, exit 1."""
    token = "a-token-for-java"
    with running_server(
        ops=_word_count_ops(), host="0.0.0.0", port=0, token=token, poll_interval=0.05
    ) as server:
        port = str(server.address[1])
        done = java(
            "-cp", str(classes), "TeammateClient", port, SENTENCE, "127.0.0.1", token=token
        )
        wrong = java("-cp", str(classes), "TeammateClient", port, SENTENCE, token="wrong")
        missing = java("-cp", str(classes), "TeammateClient", port, SENTENCE)
    assert done.returncode == 0, done.stderr
    assert done.stdout == shown_output()
    assert token not in done.stdout
    assert wrong.returncode == 1 and wrong.stdout == ""
    (line,) = wrong.stderr.splitlines()
    assert line.startswith("The service refused the token: ") and '"unauthorized"' in line
    assert missing.returncode == 1  # the server's refusal is the first reply it prints
    assert 'Received: {"ok":false,"error":{"code":"unauthorized"' in missing.stdout


@needs_jdk
def test_java_client_rejects_a_port_that_is_not_a_number(classes: Path) -> None:
    done = java("-cp", str(classes), "TeammateClient", "three-thousand")
    assert done.returncode == 2
    assert done.stderr.strip() == "The port must be a number, not three-thousand"
