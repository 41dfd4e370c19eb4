"""``python -m spike``: a server and a client in one process, both sides shown."""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

from .._args import Parser
from .._display import escape_controls
from ..client import Client
from ..errors import PipeError
from ..protocol import format_address
from ..server import running_server
from ._output import emit, prepare_output

__all__ = ["DEMO_MESSAGE", "demo_main"]

#: The assignment's words, exactly.
DEMO_MESSAGE = "A message from CS361"


class _DemoLog:
    """Prints the server's log lines with a prefix and lets the demo wait for one."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        emit(f"[server] {line}")
        with self._changed:
            self._lines.append(line)
            self._changed.notify_all()

    def wait_for(self, prefix: str, timeout: float = 5.0) -> bool:
        with self._changed:
            return self._changed.wait_for(
                lambda: any(line.startswith(prefix) for line in self._lines), timeout
            )


def demo_main(argv: Sequence[str] | None = None) -> int:
    """``python -m spike``: a server and a client in one process, both logged."""
    prepare_output()
    Parser(
        prog="python -m spike",
        description=(
            "Demo of the CS361 pipe: starts a server on a free port in the "
            f"background, sends {DEMO_MESSAGE!r} from a client and prints both "
            "sides. Run spike-server and spike-client in two terminals for the real thing."
        ),
    ).parse_args(argv)
    log = _DemoLog()
    try:
        with running_server(port=0, log=log) as server:
            emit(f"[server] Serving on {format_address(server.address)}")
            with Client(*server.address) as client:
                log.wait_for("Connection opened:")
                emit(f"[client] Sent: {DEMO_MESSAGE}")
                reply = client.send_text(DEMO_MESSAGE)
                emit(f"[client] Received: {escape_controls(reply)}")
            log.wait_for("Connection closed:")
        emit("[server] Server stopped.")
    except PipeError as exc:
        emit(f"python -m spike: {exc}", sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
