"""``python -m spike.server``: the same as ``spike-server``."""

from spike.cli import server_main

if __name__ == "__main__":
    raise SystemExit(server_main())
