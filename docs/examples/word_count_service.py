"""A small microservice on the spike pipe: it counts words and looks them up.

Only ops live here; spike-server serves them with all its options:

    uv run spike-server --ops docs/examples/word_count_service.py:ops --port 3001

Stop it with Ctrl+C.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

from spike import BadRequest, default_ops

# A copy, so this service's ops are added without changing spike's defaults.
ops = default_ops.copy()

_WORD = re.compile(r"[\w']+")

# Stand-ins for a real data source: a table, and how long a call to it takes.
DEFINITIONS = {
    "cat": "a small domesticated carnivorous mammal",
    "pipe": "a tube that carries something from one place to another",
}
LOOKUP_SECONDS = 0.2


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


@ops.op("define")
def define(params: dict, ctx) -> dict:
    """``{"op": "define", "word": "cat"}``: an op that waits.

    A plain ``def`` runs in one of the server's worker threads, so while
    it waits on its data source the server answers everyone else.
    """
    word = params["word"]
    if not isinstance(word, str):
        raise BadRequest('"word" must be a string')
    time.sleep(LOOKUP_SECONDS)  # your database query or web API call here
    meaning = DEFINITIONS.get(word.lower())
    if meaning is None:
        raise BadRequest(f"no definition for {word!r}")
    return {"word": word, "definition": meaning}


@ops.op("define_many")
async def define_many(params: dict, ctx) -> dict:
    """``{"op": "define_many", "words": ["cat", "pipe"]}``: many waits at once.

    An ``async def`` op is awaited on the server's asyncio loop: here its
    lookups overlap, so three words take one lookup's time, not three.
    """
    words = params["words"]
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise BadRequest('"words" must be a list of strings')

    async def lookup(word: str) -> str | None:
        await asyncio.sleep(LOOKUP_SECONDS)  # e.g. an aiohttp or asyncpg call
        return DEFINITIONS.get(word.lower())

    meanings = await asyncio.gather(*(lookup(word) for word in words))
    return dict(zip(words, meanings, strict=True))
