"""A teammate's program that calls the word-count service over the pipe.

    uv run python docs/examples/teammate_client.py --port 3001 "some text"

A service on another computer needs its token: --token, or SPIKE_TOKEN.
"""

from __future__ import annotations

import argparse
import os
import sys

from spike import Client, PipeError, RemoteError


def count_words(text: str, host: str = "127.0.0.1", port: int = 3001,
                token: str | None = None) -> dict:
    """Ask the service to count the words in ``text``; return its result."""
    with Client(host, port, timeout=5.0, token=token) as client:
        return client.request("word_count", text=text, top=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Count words remotely.")
    parser.add_argument("text", help="the text to count")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    parser.add_argument("--token", default=os.environ.get("SPIKE_TOKEN") or None)
    args = parser.parse_args(argv)
    where = f"{args.host}:{args.port}"

    try:
        result = count_words(args.text, args.host, args.port, args.token)
    except RemoteError as exc:
        # The service answered, but with "ok": false (e.g. bad_request).
        print(f"The service refused the request: {exc.code}: {exc.message}",
              file=sys.stderr)
        return 1
    except PipeError as exc:
        # No answer at all: not running, wrong port, or too slow.
        print(f"Could not use the service at {where}: {exc}",
              file=sys.stderr)
        return 1

    print(f"{result['words']} words, {result['characters']} characters")
    for item in result["most_common"]:
        print(f"  {item['word']}: {item['count']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
