"""The ops that wait, as the benchmark's spike server runs them.

``python -m spike.server --ops spike.bench.wait_ops:ops`` serves the
built-in ops and two that wait ``ms`` milliseconds before answering, a
stand-in for a database or web call: ``wait`` is a plain ``def`` (it runs
in the server's worker pool) and ``wait_async`` an ``async def`` (awaited
on the server's asyncio loop). The reference server
(``python -m spike.bench.servers waits``) answers both with the same bytes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from spike.ops import OpContext, default_ops

ops = default_ops.copy()


@ops.op("wait")
def wait(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Sleep ``ms`` milliseconds in a worker thread."""
    time.sleep(params["ms"] / 1000)
    return {"waited_ms": params["ms"]}


@ops.op("wait_async")
async def wait_async(params: dict[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Await ``ms`` milliseconds on the server's asyncio loop."""
    await asyncio.sleep(params["ms"] / 1000)
    return {"waited_ms": params["ms"]}
