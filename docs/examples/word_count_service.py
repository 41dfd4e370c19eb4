"""A small microservice on the spike pipe: it counts the words in a text.

The service side of the tutorial: the built-in ops (echo, info, stats)
plus ``word_count``. Start it, then call it from another program:

    uv run python docs/examples/word_count_service.py --port 3001

Stop it with Ctrl+C.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections import Counter

from spike import BadRequest, PipeError, Server, default_ops

# A copy, so this service's op is added without changing spike's defaults.
ops = default_ops.copy()

_WORD = re.compile(r"[\w']+")


@ops.op("word_count")
def word_count(params: dict, ctx) -> dict:
    """``{"op": "word_count", "text": "...", "top": 3}`` -> counts.

    A missing ``text`` is a ``bad_request`` reply by itself, a wrong value
    one because the op raises ``BadRequest``; any other exception is a bug.
    """
    text = params["text"]
    if not isinstance(text, str):
        raise BadRequest('"text" must be a string')
    top = params.get("top", 3)
    if isinstance(top, bool) or not isinstance(top, int) or top < 0:
        raise BadRequest('"top" must be a whole number, 0 or more')
    words = [word.lower() for word in _WORD.findall(text)]
    ranked = Counter(words).most_common(top)
    return {
        "words": len(words),
        "characters": len(text),
        "most_common": [{"word": w, "count": n} for w, n in ranked],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Word-count service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001,
                        help="0 picks a free port")
    args = parser.parse_args(argv)

    # One log line per connection and per message, printed at once.
    log = functools.partial(print, flush=True)
    try:
        server = Server(args.host, args.port, ops=ops, log=log)
    except PipeError as exc:  # e.g. the port is already in use
        print(exc, file=sys.stderr)
        return 1
    with server:
        host, port = server.address
        log(f"Word-count service on {host}:{port} (press Ctrl+C to stop)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            log("Service stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
