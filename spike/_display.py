"""How the spike shows text to a person: escaped, shortened, counted.

:func:`display_text` and :func:`display_line` turn what the other side sent
into text for one line of a terminal or a log: every character that a
terminal or a log reader could take for a line break or a control is
escaped, so no peer can start a line of its own, clear the screen or
retitle the window. The server's log and ``spike-client``'s output both
show what came from the network through them.

:func:`shorten` quotes a value for a one-line error message, and
:func:`plural` writes a count with its noun.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DISPLAY_CHARS", "display_line", "display_text", "escape_controls", "plural", "shorten"]

DISPLAY_CHARS = 200
# Everything a log reader could take for a line break or a terminal control:
# C0 (with \n, \r, VT, FF, the FS/GS/RS separators), DEL, C1 (with NEL,
# U+0085), and the Unicode line and paragraph separators. str.splitlines()
# and many log viewers break lines at all of these, so a client's text
# containing one could otherwise start a forged log line.
_CONTROL_ESCAPES: dict[int, str] = {
    **{c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))},
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def escape_controls(text: str) -> str:
    """``text`` whole, with line breaks and controls escaped (``\\x1b``, ``\\u2028``)."""
    if text.isprintable():  # the common case: nothing to escape, no copy
        return text
    return text.translate(_CONTROL_ESCAPES)


def display_text(text: str, limit: int = DISPLAY_CHARS) -> str:
    """Text made safe for one log line: shortened, line breaks and controls escaped."""
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    elif text.isprintable():  # the log's common case, without a second call
        return text
    return text.translate(_CONTROL_ESCAPES)


def display_line(line: bytes, limit: int = DISPLAY_CHARS) -> str:
    """:func:`display_text` of a raw line (bad UTF-8 shown as U+FFFD),
    decoding only the part shown when the line is ASCII."""
    if len(line) > limit and line.isascii():
        return f"{line[:limit].decode()}... ({len(line)} characters)".translate(_CONTROL_ESCAPES)
    return display_text(line.decode(errors="replace"), limit)


def shorten(value: Any, limit: int = 60) -> str:
    """``value`` for a one-line message: quoted, escaped, at most ``limit`` characters.

    Bytes that are valid UTF-8 are shown as text, others as ``b'...'``; a
    longer value ends in ``...`` and gives its full length.
    """
    size = ""
    if isinstance(value, bytes):
        if len(value) > limit:
            size = f" ({len(value)} bytes)"
        try:
            value = value.decode()
        except UnicodeDecodeError:
            shown = repr(value[:limit])
            return shown + ("..." if size else "") + size
    if isinstance(value, str):
        if len(value) > limit and not size:
            size = f" ({len(value)} characters)"
        # repr() escapes newlines, control characters and lone surrogates,
        # so what the server sent cannot break the line or the terminal.
        return repr(value[:limit]) + ("..." if size else "") + size
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def plural(count: int, noun: str) -> str:
    """``1 byte``, ``2 bytes``: a count and its noun (which takes an ``s``)."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
