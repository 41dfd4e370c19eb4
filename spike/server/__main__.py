"""Shim: ``python -m spike.server`` is ``spike-server`` (the code: ``spike/cli/_server.py``)."""

from spike.cli import server_main

if __name__ == "__main__":
    raise SystemExit(server_main())
