"""Shim: ``python -m spike.client`` is ``spike-client`` (the code: ``spike/cli/_client.py``)."""

from spike.cli import client_main

if __name__ == "__main__":
    raise SystemExit(client_main())
