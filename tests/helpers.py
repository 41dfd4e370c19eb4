"""Shared helpers for the spike's tests: raw sockets, log capture and CLI
subprocesses (``from helpers import ...``; the fixtures are in conftest.py).
Every wait here is bounded."""

from __future__ import annotations

import importlib
import importlib.util
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType

from spike import Server
from spike._serving import wait_for_serving
from spike.server._poller import GroupedSelectPoller, Poller, SelectorPoller

ROOT = Path(__file__).resolve().parent.parent


def load_file(path: Path, name: str) -> ModuleType:
    """A hook or example file as a module, loaded as MkDocs loads a hook.

    Its folder is on ``sys.path`` while it loads, so a hook can import its
    sibling (hooks/pdf.py imports hooks/chromium.py).
    """
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def import_hook(name: str) -> ModuleType:
    """hooks/<name>.py imported as a module of its own, in ``sys.modules``
    (its dataclasses need that; :func:`load_file` loads without it)."""
    hooks = str(ROOT / "hooks")
    sys.path.insert(0, hooks)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(hooks)


#: What a site build reads: the parts of the project a throwaway copy needs.
SITE_PARTS = ("mkdocs.yml", "docs", "hooks", "overrides", "spike", "pyproject.toml")


def copy_parts(dest: Path, parts: Sequence[str] = SITE_PARTS) -> Path:
    """Copy ``parts`` of the project (files or folders, no ``__pycache__``) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, dest / part)
    return dest


def mkdocs_serve(project: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    """``mkdocs serve`` of ``project`` on ``127.0.0.1:port``, its log on stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", "mkdocs", "serve", "-a", f"127.0.0.1:{port}"],
        cwd=project,
        env={**env, "NO_MKDOCS_2_WARNING": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
    )


def mkdocs_build(
    project: Path, site: Path, env: dict[str, str], *, strict: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The real ``mkdocs build`` of ``project`` into ``site``, its log decoded leniently."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--clean", "--site-dir", str(site)]
        + (["--strict"] if strict else []),
        cwd=project,
        env={**env, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


def why_no_pdf(pdf_hook: ModuleType) -> str | None:
    """Why this machine cannot print the PDF at all (a skip reason), or None if it can.

    Whether Mermaid is there (node_modules, the cache, or a download) only a
    build finds out; tests that read a built PDF skip on the build's own line.
    """
    if importlib.util.find_spec("playwright") is None:
        return "the Python package playwright is not installed (run `uv sync`)"
    try:
        pdf_hook.find_browser()
    except pdf_hook.BrowserUnavailable as error:
        return f"no browser to print with: {error}"
    return None


WAIT = 5.0  # generous bound for anything that should happen "at once"


class LogCapture:
    """A server ``log`` callable that records lines and can wait for one."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = WAIT) -> str:
        """Return the first line matching ``predicate``; fail after ``timeout``."""
        with self._changed:
            found: list[str] = []

            def seen() -> bool:
                found[:] = [line for line in self.lines if predicate(line)]
                return bool(found)

            if not self._changed.wait_for(seen, timeout):
                raise AssertionError(f"no matching log line within {timeout} s; got {self.lines}")
            return found[0]


def connect(address: tuple, timeout: float = WAIT) -> socket.socket:
    """A raw TCP connection with a bounded timeout."""
    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(timeout)
    return sock


class LineReader:
    """Reads newline-terminated reply lines from a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def line(self) -> bytes:
        """The next line without its newline; raises socket.timeout if none."""
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError(f"connection closed; unterminated bytes: {self.buffer!r}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def at_eof(self) -> bool:
        """True if the peer closes the connection (after any pending lines)."""
        data = self.sock.recv(65536)
        self.buffer += data
        return data == b""

    def closed_by_peer(self) -> bool:
        """True if the peer closed or reset the connection."""
        try:
            return self.at_eof()
        except ConnectionResetError:
            return True


def round_trip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return LineReader(sock).line()


# --- CLI subprocesses ---------------------------------------------------------
def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)  # the CLI must flush by itself
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(
    module: str, *args: str, input: str | None = None, timeout: float = 20
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` to completion, capturing text output."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=cli_env(),
        stdin=None if input is not None else subprocess.DEVNULL,
    )


class _LinePump:
    """The lines of one output stream of a child process, read on a thread so
    that every wait for a line is bounded."""

    def __init__(self, stream) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._lines.put(line.decode("utf-8").rstrip("\r\n"))
        self._lines.put(None)

    def next(self, timeout: float) -> str | None:
        """The next line, None at the end of the stream; fails after ``timeout``."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output line within {timeout} s") from None

    def rest(self, timeout: float) -> list[str]:
        """Every remaining line, once the stream has ended."""
        lines = []
        deadline = time.monotonic() + timeout
        while (line := self.next(max(0.0, deadline - time.monotonic()))) is not None:
            lines.append(line)
        return lines


class ServerProcess:
    """``python -m spike.server`` as a child process, its stdout and stderr read
    line by line (as UTF-8), started once it has printed its "Serving on" line."""

    def __init__(
        self,
        *args: str,
        python_args: Sequence[str] = ("-m", "spike.server"),
        cwd: Path = ROOT,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *python_args, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=cli_env(),
        )
        self._err = _LinePump(self.proc.stderr)
        try:
            address, lines = wait_for_serving(self.proc, WAIT)
        except Exception:
            self.stop()
            raise
        assert len(lines) == 1, f"the 'Serving on' line must come first: {lines}"
        self.first_line = lines[0]
        self.port = address[1]
        self._out = _LinePump(self.proc.stdout)

    def next_line(self, timeout: float = WAIT) -> str:
        """The next stdout line; fails if none comes within ``timeout``."""
        line = self._out.next(timeout)
        if line is None:
            raise AssertionError(f"server exited: {self.proc.wait()} {self.error_rest()}")
        return line

    def next_error_line(self, timeout: float = WAIT) -> str:
        """The next stderr line; fails if none comes within ``timeout``."""
        line = self._err.next(timeout)
        if line is None:
            raise AssertionError(f"stderr ended; server exit status {self.proc.wait()}")
        return line

    def wait_for_line(self, prefix: str, timeout: float = WAIT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.0, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line

    def rest(self, timeout: float = WAIT) -> list[str]:
        """Every remaining stdout line once the process has exited."""
        try:
            return self._out.rest(timeout)
        except AssertionError:
            raise AssertionError("server output did not end") from None

    def error_rest(self, timeout: float = WAIT) -> list[str]:
        """Every remaining stderr line once the process has exited."""
        return self._err.rest(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- timers on a fake clock -----------------------------------------------------
# Give a server a fake clock and a short poll interval, then move the clock:
# its idle timeout, flush-after and linger fire within milliseconds instead
# of after their seconds, and a test decides exactly how much time passed.
FAKE_POLL = 0.002  # the loop's longest sleep with a fake clock, in real seconds


class FakeClock:
    """A monotonic clock for ``Server(clock=...)`` that moves only when told."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
    """Poll ``predicate`` (a real condition) until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate}")
        time.sleep(0.001)


def settle(passes: int = 5) -> None:
    """Let a fake-clock server's loop run a few passes (and so its timers)."""
    time.sleep(passes * FAKE_POLL * 2)


# --- every poller ------------------------------------------------------------------
# Every poller this platform has: the server suite runs on each, so the
# Windows loop (select() in groups) is tested by the whole suite on Linux too.
POLLERS: dict[str, Callable[[], Poller]] = {
    "select": GroupedSelectPoller,
    "selectors": SelectorPoller,
}
if sys.platform.startswith("linux"):
    from spike.server._poller import EpollPoller

    POLLERS["epoll"] = EpollPoller

Serve = Callable[..., AbstractContextManager[Server]]
