"""How the spike shows text to a person: escaped, shortened, counted.

:func:`display_text` and :func:`display_line` turn what the other side sent
into text for one line of a terminal or a log: every character that a
terminal or a log reader could take for a line break or a control, and
every invisible format character (the bidi controls among them), is
escaped, so no peer can start a line of its own, clear the screen, retitle
the window or make a line display reversed. The server's log and
``spike-client``'s output both show what came from the network through
them.

:func:`shorten` quotes a value for a one-line error message, and
:func:`plural` writes a count with its noun.
"""

from __future__ import annotations

from typing import Any
from unicodedata import category

__all__ = ["DISPLAY_CHARS", "display_line", "display_text", "escape_controls", "plural", "shorten"]

DISPLAY_CHARS = 200
# Everything a log reader could take for a line break or a terminal control,
# or that changes how the rest of a line is displayed: the categories
# Cc (C0 with \n, \r, VT, FF and the FS/GS/RS separators, DEL, C1 with NEL),
# Zl and Zp (U+2028, U+2029), where str.splitlines() and many log viewers
# break lines; Cf, the invisible format characters, among them the bidi
# controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) that can
# make a line display reversed ("Trojan Source", CVE-2021-42574) and the
# zero-width ones (U+200B, U+2060, U+FEFF); and Cs, lone surrogates, which
# no terminal can print. Spaces (Zs), private-use and unassigned characters
# are shown as they are.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# How many characters the table below remembers as "shown as it is", so that
# text in every script stays a dict lookup per character while a client
# sending a million different characters cannot grow it without bound.
_MAX_REMEMBERED = 4096


def _escape(code: int) -> str:
    """``\\x1b``, ``\\u202e``, ``\\U000e0001``: a character as repr() writes it."""
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _shown(code: int) -> str | int:
    """How ``str.translate`` shows a character: its escape, or itself."""
    return _escape(code) if category(chr(code)) in _ESCAPED_CATEGORIES else code


class _Escapes(dict[int, "str | int"]):
    """The translate table of :func:`escape_controls`, filled as characters
    are first seen, by the running Python's Unicode database."""

    def __missing__(self, code: int) -> str | int:
        shown = _shown(code)
        # Escapes are kept always (a few thousand at most).
        if type(shown) is str or len(self) < _MAX_REMEMBERED:
            self[code] = shown
        return shown


# Latin-1 decided up front: ASCII text with a tab or an escape sequence never
# calls __missing__, however full the table is.
_CONTROL_ESCAPES = _Escapes({code: _shown(code) for code in range(0x100)})


def escape_controls(text: str) -> str:
    """``text`` whole, with line breaks, controls and format characters
    escaped as repr() writes them (``\\x1b``, ``\\u2028``, ``\\u202e``)."""
    if text.isprintable():  # the common case: nothing to escape, no copy
        return text
    return text.translate(_CONTROL_ESCAPES)


def display_text(text: str, limit: int = DISPLAY_CHARS) -> str:
    """Text made safe for one log line: shortened, and escaped as by :func:`escape_controls`."""
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
