"""Command-line front ends, one module each: ``spike-server`` (``_server.py``),
``spike-client`` (``_client.py``) and ``python -m spike`` (``_demo.py``);
``_output.py`` is how they write. The argument types they share with the
benchmark are in ``spike/_args.py``.

This package is the only part of the spike that prints. It turns the
library's exceptions into one readable line on stderr and an exit status:
0 success, 1 a runtime problem (port in use, no server, timeout, an error
reply), 2 a usage mistake (bad flag or value).
"""

from __future__ import annotations

from .._serving import SERVING_LINE, serving_port
from ._client import client_main
from ._demo import demo_main
from ._server import server_main

__all__ = ["SERVING_LINE", "client_main", "demo_main", "server_main", "serving_port"]
