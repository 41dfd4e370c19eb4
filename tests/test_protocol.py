"""The sans-IO protocol core: framing, classification and encoding, no sockets."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spike import errors, protocol
from spike.errors import NO_ID, LineTooLong, ProtocolError
from spike.protocol import (
    Invalid,
    LineFramer,
    NonFiniteNumber,
    Request,
    Text,
    decode_json,
    decode_reply,
    encode_error,
    encode_request,
    encode_result,
    encode_text,
    parse_message,
)

STREAM = 'A message from CS361!\nhé€𝄞 ünïcode\r\n{"op": "echo", "text": "ß"}\n\nlast'.encode()
STREAM_LINES = [
    b"A message from CS361!",
    "hé€𝄞 ünïcode".encode(),
    '{"op": "echo", "text": "ß"}'.encode(),
    b"",
]


def feed_all(framer: LineFramer, chunks: list[bytes]) -> list[bytes]:
    lines: list[bytes] = []
    for chunk in chunks:
        lines.extend(framer.feed(chunk))
    return lines


# --- framing --------------------------------------------------------------------
def test_framer_cuts_lines_and_keeps_the_rest() -> None:
    framer = LineFramer()
    assert framer.feed(STREAM) == STREAM_LINES
    assert framer.partial_bytes == len(b"last")
    assert framer.flush() == b"last"
    assert framer.partial_bytes == 0
    assert framer.flush() is None


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_framer_same_lines_for_a_split_at_every_byte(cut: int) -> None:
    """Two chunks cut anywhere, including inside multi-byte UTF-8 characters."""
    framer = LineFramer()
    assert feed_all(framer, [STREAM[:cut], STREAM[cut:]]) == STREAM_LINES
    assert framer.flush() == b"last"
    for line in STREAM_LINES:
        line.decode()  # every line is whole UTF-8 again


def test_framer_byte_by_byte() -> None:
    framer = LineFramer()
    assert feed_all(framer, [STREAM[i : i + 1] for i in range(len(STREAM))]) == STREAM_LINES
    assert framer.flush() == b"last"


def test_framer_fast_path_and_carriage_return() -> None:
    framer = LineFramer()
    assert framer.feed(b"one\n") == [b"one"]
    assert framer.feed(b"two\r\n") == [b"two"]
    assert framer.feed(b"\n") == [b""]
    assert framer.feed(b"\r\n") == [b""]
    assert framer.feed(b"") == []
    # Only the \r right before \n goes; others are content.
    assert framer.feed(b"a\rb\r\r\n") == [b"a\rb\r"]


def test_line_limit_is_exact() -> None:
    framer = LineFramer(max_line_bytes=5)
    assert framer.feed(b"12345\n") == [b"12345"]
    assert framer.feed(b"123") == []
    assert framer.feed(b"45\n") == [b"12345"]
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"123456\n")
    assert caught.value.code == errors.LINE_TOO_LONG
    assert caught.value.lines == []


def test_many_short_lines_skip_the_per_line_look_but_not_its_rules() -> None:
    """A chunk of short lines is split as it is; one too long, or a \r before
    a newline (in the chunk, or held from the chunk before), still counts."""
    framer = LineFramer(max_line_bytes=5)
    assert framer.feed(b"a\nbb\nccc\n") == [b"a", b"bb", b"ccc"]
    assert framer.feed(b"1234\r") == []
    assert framer.feed(b"\nx\r\ny") == [b"1234", b"x"]
    assert framer.feed(b"2345\nz\n") == [b"y2345", b"z"]
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"ok\n123456\nafter\n")
    assert caught.value.lines == [b"ok"]
    framer = LineFramer(max_line_bytes=5)
    framer.feed(b"1234")
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"56\nok\n")  # the held start makes the first line too long
    assert caught.value.lines == []


def test_line_limit_holds_before_any_newline() -> None:
    framer = LineFramer(max_line_bytes=8)
    framer.feed(b"12345678")
    with pytest.raises(LineTooLong):
        framer.feed(b"9")
    assert framer.partial_bytes == 0  # nothing kept after the overflow


def test_line_too_long_keeps_the_lines_before_it() -> None:
    framer = LineFramer(max_line_bytes=4)
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"ok\nfine\nway too long\nlost\n")
    assert caught.value.lines == [b"ok", b"fine"]
    with pytest.raises(LineTooLong) as caught:
        framer.feed(b"ab\ncd\nlong tail")
    assert caught.value.lines == [b"ab", b"cd"]


def test_a_long_line_over_many_chunks_comes_back_whole_as_bytes() -> None:
    chunk = bytes(range(11, 256)) * 256  # 62,720 bytes, no newline
    framer = LineFramer(max_line_bytes=2_000_000)
    for _ in range(2):  # the framer is as good as new after each long line
        for _ in range(30):
            assert framer.feed(chunk) == []
        lines = framer.feed(b"end\r\nnext\nhal")
        assert [type(line) for line in lines] == [bytes, bytes]
        assert lines == [chunk * 30 + b"end", b"next"]
        assert framer.partial_bytes == 3
        assert framer.feed(b"f\n") == [b"half"]
        assert framer.partial_bytes == 0


def test_framer_rejects_a_zero_limit() -> None:
    with pytest.raises(ValueError):
        LineFramer(0)


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([b"\n", b"next\n"], [b"next"]),
        ([b"\r\n", b"next\n"], [b"next"]),
        ([b"\r", b"\n", b"next\n"], [b"next"]),
        ([b"next\n"], [b"next"]),
        ([b"\n\n"], [b""]),  # only one newline belongs to the flushed line
    ],
)
def test_newline_right_after_a_flush_only_ends_the_flushed_line(
    chunks: list[bytes], expected: list[bytes]
) -> None:
    framer = LineFramer()
    assert framer.feed(b"Hello") == []
    assert framer.flush() == b"Hello"
    assert feed_all(framer, chunks) == expected


def test_flush_drops_a_trailing_carriage_return() -> None:
    framer = LineFramer()
    framer.feed(b"println\r")
    assert framer.flush() == b"println"


line_bytes = st.binary(max_size=40).filter(lambda b: b"\n" not in b)


@given(
    lines=st.lists(line_bytes, max_size=20),
    tail=line_bytes,
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=30),
)
@settings(max_examples=300, deadline=None)
def test_any_chunking_gives_the_same_lines(
    lines: list[bytes], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(line + b"\n" for line in lines) + tail
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    framer = LineFramer()
    expected = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    assert feed_all(framer, chunks) == expected
    expected_tail = tail[:-1] if tail.endswith(b"\r") else tail
    assert framer.flush() == (expected_tail if tail else None)


@given(lines=st.lists(line_bytes, min_size=1, max_size=10), limit=st.integers(1, 30))
@settings(max_examples=200, deadline=None)
def test_limit_property(lines: list[bytes], limit: int) -> None:
    """Lines within the limit come out; the first longer one raises with its predecessors."""
    stream = b"".join(line + b"\n" for line in lines)
    framer = LineFramer(limit)
    too_long = [i for i, line in enumerate(lines) if len(line) > limit]
    if not too_long:
        assert len(framer.feed(stream)) == len(lines)
        return
    with pytest.raises(LineTooLong) as caught:
        framer.feed(stream)
    clean = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    assert caught.value.lines == clean[: too_long[0]]


# --- classifying a line -------------------------------------------------------
def test_plain_text_is_a_text_message() -> None:
    assert parse_message("héllo".encode()) == Text("héllo")
    assert parse_message(b"") == Text("")
    assert parse_message(b" {not json, leading space}") == Text(" {not json, leading space}")


def test_json_request_is_op_id_and_params() -> None:
    message = parse_message(b'{"op": "echo", "id": 3, "text": "hi"}')
    assert message == Request("echo", 3, {"text": "hi"})
    assert parse_message(b'{"op": "info"}') == Request("info", NO_ID, {})
    assert parse_message(b'{"op": "info", "id": null}') == Request("info", None, {})


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"caf\xc3", errors.BAD_UTF8),  # a character cut in half
        (b"\xff\xfe", errors.BAD_UTF8),
        (b'{"op": "echo", "text": "\xff"}', errors.BAD_UTF8),
        (b"{", errors.BAD_JSON),
        (b'{"op": "echo",}', errors.BAD_JSON),
        (b'{"op": "echo", "n": NaN}', errors.BAD_JSON),
        (b'{"op": "echo"} trailing', errors.BAD_JSON),
        (b"{" * 100_000, errors.BAD_JSON),  # deep nesting must not crash
        (b'{"op": "echo", "id": 1e999}', errors.BAD_JSON),  # infinite as a float
        (b'{"op": "echo", "text": "x", "n": [-1.5e400]}', errors.BAD_JSON),
        (b'{"id": 1}', errors.BAD_REQUEST),
        (b'{"op": 42}', errors.BAD_REQUEST),
        (b'{"op": null}', errors.BAD_REQUEST),
    ],
)
def test_bad_lines_are_invalid_messages(line: bytes, code: str) -> None:
    message = parse_message(line)
    assert isinstance(message, Invalid)
    assert message.code == code
    assert message.message


def test_bad_utf8_names_the_first_bad_byte() -> None:
    assert parse_message(b"caf\xc3") == Invalid(errors.BAD_UTF8, "not valid UTF-8 (byte 3)")


def test_bad_request_keeps_the_id_when_it_can() -> None:
    assert parse_message(b'{"id": "abc"}') == Invalid(
        errors.BAD_REQUEST, 'a request needs "op" with a string value', "abc"
    )
    message = parse_message(b"{]")
    assert isinstance(message, Invalid)
    assert message.id is NO_ID


def test_decode_json_refuses_numbers_json_cannot_carry() -> None:
    assert decode_json(b'{"n": [1.5, -2]}') == {"n": [1.5, -2]}
    for text in ("NaN", "Infinity", "-Infinity", "1e999", "-1.5e400"):
        with pytest.raises(NonFiniteNumber) as caught:
            decode_json(text.encode())
        assert caught.value.text == text
    with pytest.raises(ValueError) as not_json:
        decode_json(b"nope")
    assert not isinstance(not_json.value, NonFiniteNumber)


def test_error_codes_are_the_documented_nine() -> None:
    assert set(errors.ERROR_CODES) == {
        "bad_utf8",
        "bad_json",
        "bad_request",
        "unknown_op",
        "op_failed",
        "op_timeout",
        "line_too_long",
        "overloaded",
        "unauthorized",
    }
    for code in errors.ERROR_CODES:
        assert f"``{code}``" in protocol.__doc__


# --- encoding ---------------------------------------------------------------------
def test_reply_shapes() -> None:
    assert encode_result({"text": "hi"}, 7) == b'{"id":7,"ok":true,"result":{"text":"hi"}}\n'
    assert encode_result([1, 2]) == b'{"ok":true,"result":[1,2]}\n'
    assert encode_result(None, None) == b'{"id":null,"ok":true,"result":null}\n'
    assert encode_error("unknown_op", "no such op", "x") == (
        b'{"id":"x","ok":false,"error":{"code":"unknown_op","message":"no such op"}}\n'
    )
    assert (
        encode_error("bad_json", "nope")
        == b'{"ok":false,"error":{"code":"bad_json","message":"nope"}}\n'
    )


def test_text_reply() -> None:
    assert encode_text("héllo") == "héllo\n".encode()
    with pytest.raises(ValueError):
        encode_text("two\nlines")


def test_request_encoding() -> None:
    line = encode_request("echo", {"text": "hi"}, 1)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert parse_message(line[:-1]) == Request("echo", 1, {"text": "hi"})
    assert encode_request("info") == b'{"op":"info"}\n'
    with pytest.raises(ValueError):
        encode_request("echo", {"id": 2})


def test_not_json_serializable_results_raise() -> None:
    # Each value, under each codec: tests/test_codec.py.
    with pytest.raises(TypeError):
        encode_result(object())
    with pytest.raises(ValueError):
        encode_result({1: "a", "1": "b"})


def test_big_integers_with_either_codec() -> None:
    big = 123456789012345678901234567890
    request = parse_message(b'{"op": "echo", "n": %d}' % big)
    assert isinstance(request, Request)
    # Exact with the standard library; orjson reads it as a float (documented).
    assert request.params["n"] == (big if protocol.JSON_BACKEND == "json" else float(big))
    assert decode_reply(encode_result(big)[:-1])["result"] == request.params["n"]


def test_lone_surrogates_are_escaped_not_fatal() -> None:
    request = parse_message(b'{"op": "echo", "text": "\\ud800"}')
    assert isinstance(request, Request)
    line = encode_result({"text": request.params["text"]}, 1)
    assert line.endswith(b"\n")
    assert json.loads(line)["result"]["text"] == "\ud800"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


# Ids within 64 bits: beyond them orjson reads a float (see the big-integer test above).
@given(result=json_values, request_id=st.none() | st.integers(-(2**63), 2**63 - 1) | st.text())
@settings(max_examples=200, deadline=None)
def test_result_round_trip(result: object, request_id: object) -> None:
    line = encode_result(result, request_id)
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    reply = decode_reply(line[:-1])
    assert reply == {"id": request_id, "ok": True, "result": result}


@given(text=st.text())
@settings(max_examples=200, deadline=None)
def test_echo_request_round_trip(text: str) -> None:
    line = encode_request("echo", {"text": text}, 1)
    assert line.count(b"\n") == 1
    request = parse_message(line[:-1])
    assert isinstance(request, Request) and request.params == {"text": text}


@pytest.mark.parametrize(
    "line",
    [
        b"nope",
        b"[1]",
        b'{"ok": 1}',
        b'{"ok": true}',
        b'{"ok": false}',
        b'{"ok": false, "error": {"code": 1}}',
    ],
)
def test_malformed_replies(line: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_reply(line)


def test_check_utf8_says_what_parse_message_says() -> None:
    assert protocol.check_utf8("héllo".encode()) is None
    for line in (b"caf\xc3", b"ok \xff\xfe"):
        assert protocol.check_utf8(line) == parse_message(line)


# --- an error reply is always one a client can read ---------------------------------
class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


@pytest.mark.parametrize(
    ("code", "message", "shown"),
    [
        ("bad_request", {"name": "is required"}, "{'name': 'is required'}"),
        ("bad_request", 404, "404"),
        ("bad_request", None, "None"),
        ("bad_request", b"bytes", "b'bytes'"),
        ("bad_request", Unprintable(), "<Unprintable that cannot be shown as text>"),
        (404, "a code that is not a string", "a code that is not a string"),
    ],
)
def test_an_error_with_a_message_that_is_not_a_string_is_still_a_reply(
    code: object, message: object, shown: str
) -> None:
    line = encode_error(code, message, 3)  # type: ignore[arg-type]
    reply = decode_reply(line[:-1])  # what the project's own Client checks
    assert reply["error"] == {"code": str(code), "message": shown}
    assert reply["id"] == 3


def test_details_go_out_when_json_can_carry_them() -> None:
    line = encode_error("bad_request", "check the fields", 1, {"name": "is required"})
    assert line == (
        b'{"id":1,"ok":false,"error":{"code":"bad_request","message":"check the fields",'
        b'"details":{"name":"is required"}}}\n'
    )
    assert decode_reply(line[:-1])["error"]["details"] == {"name": "is required"}
    # Details JSON cannot carry are left out, and the message says so.
    reply = decode_reply(encode_error("bad_request", "nope", 2, {"when": {1, 2}})[:-1])
    assert reply["error"] == {
        "code": "bad_request",
        "message": "nope (its details could not be sent as JSON)",
    }
    assert reply["id"] == 2


def test_an_id_json_cannot_carry_is_left_out_and_said() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    reply = decode_reply(encode_error("bad_request", "nope", deep)[:-1])
    assert "id" not in reply
    assert reply["error"]["message"] == "nope (the request's id could not be sent back)"
