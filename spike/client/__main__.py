"""``python -m spike.client``: the same as ``spike-client``."""

from spike.cli import client_main

if __name__ == "__main__":
    raise SystemExit(client_main())
