"""The spike tests' fixtures: real servers on free ports and server processes.
Helpers the tests import live in helpers.py."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import pytest
from helpers import POLLERS, LogCapture, Serve, ServerProcess

from spike import Server, running_server
from spike._limits import raise_open_file_limit

# The concurrency tests hold about two sockets per client in this process.
raise_open_file_limit(8192)
# A token in the developer's environment would make every server the suite
# starts (and the site build's) ask for one: tests that want one set it.
os.environ.pop("SPIKE_TOKEN", None)


@pytest.fixture(params=sorted(POLLERS))
def serve(request: pytest.FixtureRequest) -> Serve:
    """``running_server`` on each poller in turn (the test runs once per poller)."""
    make = POLLERS[request.param]
    if (
        request.param == "select"
        and sys.platform != "win32"
        and request.node.get_closest_marker("many_sockets")
    ):
        pytest.skip(
            "select() here cannot watch descriptors numbered 1024 or more "
            "(Windows' has no such limit; its groups are tested with 150 clients)"
        )

    def start(**kwargs: Any) -> AbstractContextManager[Server]:
        return running_server(poller=make(), **kwargs)

    return start


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
