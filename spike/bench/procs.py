"""Server processes for the benchmark: start, pin, wait until ready, stop.

Every server under test runs as its own operating-system process, started
with ``sys.executable`` (or a compiled C binary), so the client loop in the
benchmark process never shares an interpreter lock with the server.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import cast

from spike._serving import NotServing, wait_for_serving

_READY_TIMEOUT_S = 20.0
# The CPUs this process could use before pin_to_cpu() pinned it (empty: not pinned).
_unpinned_cpus: set[int] = set()


class BenchSetupError(RuntimeError):
    """A server could not be built or started; the message says which and why."""


def pin_to_cpu(cpu: int | None) -> str:
    """Pins this process (and so every child it starts later) to one CPU.

    Returns a sentence for the results saying what was done. On a 2-core VM a
    round trip between two cores costs tens of microseconds more than one on
    a shared core, and which case you get changes from run to run, so numbers
    without pinning are noisy; pinning both ends to one core makes them stable
    and comparable. Only Linux has ``os.sched_setaffinity``.
    """
    if cpu is None:
        return "not pinned (--no-pin)"
    if sys.platform != "linux":
        return f"not pinned: {sys.platform} has no os.sched_setaffinity; expect more noise"
    allowed = os.sched_getaffinity(0)
    if cpu not in allowed:
        raise BenchSetupError(
            f"cannot pin to CPU {cpu}: this process may use CPUs {sorted(allowed)}"
        )
    os.sched_setaffinity(0, {cpu})
    if not _unpinned_cpus:  # pinned a second time: what it could use before the first
        _unpinned_cpus.update(allowed)
    return f"client and servers pinned to CPU {cpu}"


def pinned() -> bool:
    """True once :func:`pin_to_cpu` has pinned this process to one CPU."""
    return bool(_unpinned_cpus)


@contextlib.contextmanager
def every_cpu() -> Iterator[None]:
    """Lets the calling thread, and the processes and threads it starts
    meanwhile, use every CPU it could before :func:`pin_to_cpu`; pins it
    again on exit. Nothing to do when nothing was pinned.

    For what a shared core hides: a thousand threads that contend for
    Python's lock from two cores, or a client with a core of its own.
    """
    if not _unpinned_cpus or sys.platform != "linux":
        yield
        return
    pinned_to = os.sched_getaffinity(0)
    os.sched_setaffinity(0, _unpinned_cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, pinned_to)


class ServerProcess:
    """One server under test, running in a child process.

    ``command`` must make the child print ``Serving on HOST:PORT`` as its first
    line. The child's output is drained on a thread (a full pipe would stall
    it) and the last lines are kept for error messages. After the first line
    the output is read in large chunks, not line by line: a logging server
    prints a line per message, and reading those one at a time would cost
    the benchmark's own process (where the client loops run) real time.
    """

    def __init__(self, name: str, command: list[str], cpu: int | None = None) -> None:
        self.name = name
        self.command = command
        self.cpu = cpu
        self.host = ""
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._drainer: threading.Thread | None = None
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        # Set if the server reported losing log lines: its log could not keep up.
        self.dropped_log_lines = False

    def start(self) -> ServerProcess:
        """Starts the child and returns once it listens (or raises)."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
        except OSError as exc:
            raise BenchSetupError(f"{self.name}: cannot start {self.command[0]}: {exc}") from exc
        if self.cpu is not None and sys.platform == "linux":
            # Inherited from the pinned parent already; set again so a server
            # started without a pinned parent is still on the chosen core.
            os.sched_setaffinity(self._proc.pid, {self.cpu})
        try:
            (self.host, self.port), lines = wait_for_serving(self._proc, _READY_TIMEOUT_S)
        except NotServing as exc:
            self._tail.extend(exc.output)
            self.stop()
            raise BenchSetupError(
                f"{self.name}: server did not start ({self.last_output() or 'no output'})"
            ) from None
        self._tail.extend(lines)
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        return self

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        # Popen's pipes are buffered readers, whose read1() takes what is there.
        stdout = cast(io.BufferedReader, self._proc.stdout)
        rest = b""
        while chunk := stdout.read1(1 << 20):
            rest = rest[-64:] + chunk
            if b" log lines dropped: " in rest or b" log line dropped: " in rest:
                self.dropped_log_lines = True
            rest = rest[-4096:]
        self._tail.extend(rest.decode(errors="replace").splitlines()[-20:])

    @property
    def pid(self) -> int:
        """The child's process id (it must have been started)."""
        assert self._proc is not None
        return self._proc.pid

    def alive(self) -> bool:
        """True while the child process is still running."""
        return self._proc is not None and self._proc.poll() is None

    def last_output(self) -> str:
        """The child's last non-empty line of output (a traceback's last line says most)."""
        return next((line for line in reversed(self._tail) if line.strip()), "")

    def stop(self) -> None:
        """Stops the child (terminate, then kill) and reaps it."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        if self._drainer is not None:
            self._drainer.join(timeout=2)  # its last words (a report of lost log lines)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def python_command(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def find_c_compiler() -> str | None:
    """The path of cc, gcc or clang, whichever is found first on PATH."""
    for name in ("cc", "gcc", "clang"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build_c_server(source_name: str, compiler: str) -> Path:
    """Compiles one of the bundled C echo servers and returns the binary.

    Binaries go to a cache folder in the system temp dir, keyed by a hash of
    the source and the compiler, so the repository stays clean and a rerun
    does not compile again.
    """
    # One name per joinpath(): Traversable takes several only from Python 3.11.
    source = resources.files("spike.bench").joinpath("c").joinpath(source_name).read_bytes()
    key = hashlib.sha256(source + compiler.encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "spike-bench-c"
    binary = cache / f"{Path(source_name).stem}-{key}"
    if binary.exists():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    source_path = cache / f"{key}-{source_name}"
    source_path.write_bytes(source)
    # Build under a private name, then rename: two runs at once never see half a file.
    partial = cache / f"{binary.name}.{os.getpid()}.part"
    result = subprocess.run(
        [compiler, "-O2", "-pthread", "-o", str(partial), str(source_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        first = (result.stderr.strip().splitlines() or ["no compiler output"])[0]
        raise BenchSetupError(f"cannot compile {source_name} with {compiler}: {first}")
    os.replace(partial, binary)
    return binary
