"""The spike tests' fixtures: real servers on free ports and server processes.
Helpers the tests import live in helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest
from helpers import LogCapture, ServerProcess

from spike import running_server
from spike._limits import raise_open_file_limit

# The concurrency tests hold about two sockets per client in this process.
raise_open_file_limit(8192)


@pytest.fixture
def log() -> LogCapture:
    return LogCapture()


@pytest.fixture
def server(log: LogCapture) -> Iterator:
    """A default server on a free port, logging into ``log``."""
    with running_server(port=0, log=log) as srv:
        yield srv


@pytest.fixture
def server_process() -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str, python_args: Sequence[str] = ("-m", "spike.server")) -> ServerProcess:
        proc = ServerProcess(*args, python_args=python_args)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
