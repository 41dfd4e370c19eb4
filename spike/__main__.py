"""``python -m spike``: the self-contained demo (server and client in one process)."""

from .cli import demo_main

if __name__ == "__main__":
    raise SystemExit(demo_main())
