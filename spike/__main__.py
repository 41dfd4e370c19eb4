"""Shim: ``python -m spike`` runs the self-contained demo (the code: ``spike/cli/_demo.py``)."""

from spike.cli import demo_main

if __name__ == "__main__":
    raise SystemExit(demo_main())
