"""What a person sees of a peer's text: the server's log and spike-client's
output escape controls, line breaks and invisible format characters (the
bidi controls of "Trojan Source", CVE-2021-42574, among them)."""

from __future__ import annotations

import json
import subprocess
import sys
import unicodedata

import pytest
from helpers import ROOT, LineReader, cli_env, connect

from spike._display import display_line, display_text, escape_controls

ESCAPED_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}

# The characters the issue names: bidi embeddings and overrides, isolates,
# marks, the zero-width space, the byte order mark, and the line and
# paragraph separators.
NAMED = [
    *range(0x202A, 0x202F),  # LRE, RLE, PDF, LRO, RLO
    *range(0x2066, 0x206A),  # LRI, RLI, FSI, PDI
    0x200E,  # LRM
    0x200F,  # RLM
    0x061C,  # ARABIC LETTER MARK
    0x200B,  # ZERO WIDTH SPACE
    0xFEFF,  # ZERO WIDTH NO-BREAK SPACE (BOM)
    0x2028,  # LINE SEPARATOR
    0x2029,  # PARAGRAPH SEPARATOR
]

# On screen, the right-to-left override shows "admin=true" reversed, and the
# isolate and zero-width space hide what is between them from a casual reader.
REVERSED = "user=alice \u202eadmin=true\u202c \u2066hidden\u2069\u200b"
REVERSED_SHOWN = "user=alice \\u202eadmin=true\\u202c \\u2066hidden\\u2069\\u200b"


def repr_escape(char: str) -> str:
    """How repr() writes a character it does not print (the independent oracle)."""
    return repr(char)[1:-1]


def test_every_character_of_an_escaped_category_is_escaped_as_repr_does() -> None:
    escaped = [
        chr(code)
        for code in range(0x110000)
        if unicodedata.category(chr(code)) in ESCAPED_CATEGORIES
    ]
    assert len(escaped) > 2000  # Cs alone is 2,048
    for char in escaped:
        # The shortcut: isprintable() must send every such text to the escaping.
        assert not char.isprintable(), f"U+{ord(char):04X} passes the isprintable shortcut"
        shown = escape_controls(f"a{char}b")
        assert shown.isascii() and shown.isprintable()
        if ord(char) >= 0x20 and char not in "\x7f":
            assert shown == f"a{repr_escape(char)}b"
        else:  # C0 and DEL as \xNN (repr writes \t, \n and \r as letters)
            assert shown == f"a\\x{ord(char):02x}b"


def test_every_other_character_is_shown_as_it_is() -> None:
    others = "".join(
        chr(code)
        for code in range(0x110000)
        if unicodedata.category(chr(code)) not in ESCAPED_CATEGORIES
    )
    assert escape_controls(others) == others
    assert display_text(others, limit=len(others)) == others


@pytest.mark.parametrize("code", NAMED, ids=[f"U+{code:04X}" for code in NAMED])
def test_the_named_format_and_bidi_characters_are_escaped(code: int) -> None:
    char = chr(code)
    assert escape_controls(char) == f"\\u{code:04x}"
    assert display_text(f"x{char}y") == f"x\\u{code:04x}y"
    assert display_line(f"x{char}y".encode()) == f"x\\u{code:04x}y"


def test_common_text_is_returned_unchanged_without_a_copy() -> None:
    for text in ("plain ASCII", "é, 漢字, 😀", ""):
        assert escape_controls(text) is text  # the isprintable() shortcut
        assert display_text(text) is text
    # Not "printable" to Python, but shown as it is: a no-break space, an
    # ideographic space, a private-use character.
    odd = "no\u00a0break\u3000\ue000"
    assert escape_controls(odd) == odd


def test_a_long_ascii_line_is_cut_then_escaped() -> None:
    line = b"\x1b[2J" + b"x" * 300
    assert display_line(line, limit=10) == "\\x1b[2Jxxxxxx... (304 characters)"
    assert display_line("\u202e".encode() + b"x" * 300, limit=3) == (
        "\\u202exx... (301 characters)"
    )


def test_a_client_cannot_reverse_a_server_log_line(server_process) -> None:
    """The real spike-server: plain text, a JSON request and an unknown op name,
    each with bidi controls, reach its log escaped."""
    proc = server_process("--port", "0")
    with connect(("127.0.0.1", proc.port)) as sock:
        reader = LineReader(sock)
        sock.sendall(REVERSED.encode() + b"\n")
        assert reader.line() == REVERSED.encode()  # the reply is the text itself
        sock.sendall(json.dumps({"op": REVERSED}, ensure_ascii=False).encode() + b"\n")
        assert json.loads(reader.line())["error"]["code"] == "unknown_op"
    lines = [proc.first_line]
    while not lines[-1].startswith("Connection closed:"):
        lines.append(proc.next_line())
    log = "\n".join(lines)
    for code in NAMED:
        assert chr(code) not in log
    assert f"Received: {REVERSED_SHOWN}" in lines
    assert any(REVERSED_SHOWN in line and line.startswith("Received: {") for line in lines)


def test_spike_client_shows_bidi_controls_escaped(server) -> None:
    """spike-client prints what it sent and what came back, escaped alike."""
    result = subprocess.run(
        [sys.executable, "-m", "spike.client", "--port", str(server.address[1]), REVERSED],
        capture_output=True,
        timeout=20,
        cwd=ROOT,
        env=cli_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        f"Sent: {REVERSED_SHOWN}",
        f"Received: {REVERSED_SHOWN}",
    ]
    assert result.stdout.isascii()
