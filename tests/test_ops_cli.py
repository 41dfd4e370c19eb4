"""``spike-server --ops MODULE:NAME``: serving a student's own ops, and every
mistake in naming them as one line (exit 2), run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, WAIT, LineReader, ServerProcess, cli_env, connect

SERVICE = """\
import time
from spike import BadRequest, default_ops

ops = default_ops.copy()

@ops.op("lookup")
def lookup(params, ctx):
    time.sleep(0.05)  # a database call
    if params["user"] != "ada":
        raise BadRequest("no such user")
    return {"user": "ada", "score": 42}
"""


@pytest.fixture
def service(tmp_path: Path) -> Path:
    path = tmp_path / "my service" / "my_service.py"  # a folder name with a space
    path.parent.mkdir()
    path.write_text(SERVICE, encoding="utf-8")
    return path


def serve_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``spike-server ARGS`` that must stop by itself (a mistake), from ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "spike.server", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        env=cli_env(),
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("form", ["file", "module"])
def test_ops_from_a_file_or_a_module_are_served_with_the_builtins(
    form: str, service: Path
) -> None:
    target = f"{service}:ops" if form == "file" else "my_service:ops"
    args = ("--port", "0", "--ops", target)
    # The module form imports from the current directory, as `uvicorn main:app`.
    proc = ServerProcess(*args, cwd=service.parent if form == "module" else ROOT)
    try:
        assert f"ops from {target}: echo, info, lookup, stats" in proc.first_line
        with connect(("127.0.0.1", proc.port)) as sock:
            sock.sendall(b'{"op": "lookup", "id": 1, "user": "ada"}\n')
            sock.sendall(b'{"op": "lookup", "id": 2, "user": "bob"}\n')
            sock.sendall(b"A message from CS361\n")
            reader = LineReader(sock)
            assert json.loads(reader.line()) == {
                "id": 1,
                "ok": True,
                "result": {"user": "ada", "score": 42},
            }
            assert json.loads(reader.line())["error"]["code"] == "bad_request"
            assert reader.line() == b"A message from CS361"
    finally:
        proc.stop()


MISTAKES = {
    "no colon": ("my_service.py", "use MODULE:NAME or FILE.py:NAME"),
    "no such file": ("nope.py:ops", "there is no file 'nope.py'"),
    "no such module": ("nope:ops", "no module named 'nope'"),
    "no such name": ("my_service.py:opz", "has no name 'opz' (it has default_ops, ops)"),
    "not a registry": ("my_service.py:time", "time is a module, not an OpRegistry"),
    "raises on import": ("broken.py:ops", "importing broken.py failed (broken.py, line 2)"),
    "syntax error": ("typo.py:ops", "has a syntax error at typo.py, line 1"),
    "missing dependency": ("needs.py:ops", "No module named 'not_installed_here'"),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_each_mistake_naming_the_ops_is_one_line_and_exit_2(mistake: str, service: Path) -> None:
    folder = service.parent
    (folder / "broken.py").write_text("x = 1\nraise RuntimeError('no database')\n")
    (folder / "typo.py").write_text("def op(:\n")
    (folder / "needs.py").write_text("import not_installed_here\n")
    target, expected = MISTAKES[mistake]
    done = serve_cli("--ops", target, cwd=folder)
    assert done.returncode == 2, done
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("spike-server: --ops")
    assert expected in lines[0]
    assert "Traceback" not in done.stderr


def test_tracebacks_adds_the_traceback_of_an_import_that_failed(service: Path) -> None:
    (service.parent / "broken.py").write_text("x = 1\nraise RuntimeError('no database')\n")
    done = serve_cli("--ops", "broken.py:ops", "--tracebacks", cwd=service.parent)
    assert done.returncode == 2
    assert "importing broken.py failed" in done.stderr.splitlines()[0]
    assert "Traceback (most recent call last)" in done.stderr
    assert "RuntimeError: no database" in done.stderr


def test_the_op_flags_reach_the_server(service: Path, server_process) -> None:
    proc = server_process(
        "--port",
        "0",
        "--ops",
        f"{service}:ops",
        "--workers",
        "3",
        "--op-timeout",
        "0.01",
        "--max-in-flight",
        "2",
    )
    with connect(("127.0.0.1", proc.port)) as sock:
        sock.sendall(b'{"op": "lookup", "user": "ada"}\n{"op": "stats"}\n')
        reader = LineReader(sock)
        timed_out = json.loads(reader.line())
        stats = json.loads(reader.line())["result"]
    assert timed_out["error"]["code"] == "op_timeout"
    assert "0.01 s" in timed_out["error"]["message"]
    assert stats["workers"] == 3
    logged = proc.wait_for_line("Error: ", WAIT)  # the log is stdout unless --quiet
    assert "op 'lookup' timed out after 0.01 s" in logged
