"""One codec's answer: the standard library's json and orjson (the optional
``fast`` extra) give the same reply to the same op result, by the rules in
spike.protocol's docstring. Every case runs under both codecs; the orjson
half skips, saying why, where orjson is not installed."""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from helpers import LogCapture
from hypothesis import given, settings
from hypothesis import strategies as st

from spike import Client, OpRegistry, RemoteError, protocol, running_server
from spike.protocol import encode_result

NO_ORJSON = "orjson is not installed (it is the optional `fast` extra: uv sync --extra fast)"


@pytest.fixture(params=["json", "orjson"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every reply in the test written by one codec: the standard library's
    (forced), or orjson's (the module's own choice, when installed)."""
    if request.param == "json":
        monkeypatch.setattr(protocol, "_dumps", protocol._std_dumps)
    else:
        if protocol.JSON_BACKEND != "orjson":
            pytest.skip(NO_ORJSON)
        assert protocol._dumps is not protocol._std_dumps
    return request.param


requires_orjson = pytest.mark.skipif(protocol.JSON_BACKEND != "orjson", reason=NO_ORJSON)


def both_codecs() -> dict[str, Callable[[Any], bytes]]:
    """The two writers side by side, for tests that compare them in one go."""
    assert protocol.JSON_BACKEND == "orjson"
    return {"json": protocol._std_dumps, "orjson": protocol._dumps}


class Colour(enum.Enum):
    RED = 1


class Letter(str, enum.Enum):
    A = "a"


class Level(enum.IntEnum):
    HIGH = 3


class Pair(enum.Enum):
    ONE_TWO = (1, 2)


class Odd(enum.Enum):
    NAN = math.nan
    WHEN = datetime.date(2024, 1, 2)


class Text(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


class Record(dict):
    pass


Point = collections.namedtuple("Point", "x y")


@dataclasses.dataclass
class Box:
    size: int


def _cycle() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


IST = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")

# (name, result, what both codecs write for it)
WRITTEN: list[tuple[str, Any, bytes]] = [
    # NaN and Infinity: null, as JSON.stringify writes them
    ("nan", math.nan, b"null"),
    ("infinity", math.inf, b"null"),
    ("-infinity", -math.inf, b"null"),
    ("nan inside", [1.5, {"x": math.nan}, (math.inf,)], b'[1.5,{"x":null},[null]]'),
    ("nan float subclass", Ratio("nan"), b"null"),
    # dates and times: isoformat()
    ("datetime", datetime.datetime(2024, 1, 2, 3, 4, 5, 6), b'"2024-01-02T03:04:05.000006"'),
    (
        "datetime with zone",
        datetime.datetime(2024, 1, 2, 3, 4, tzinfo=IST),
        b'"2024-01-02T03:04:00+05:30"',
    ),
    (
        "datetime in UTC",
        datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
        b'"2024-01-02T00:00:00+00:00"',
    ),
    ("date", datetime.date(2024, 1, 2), b'"2024-01-02"'),
    ("time", datetime.time(1, 2, 3), b'"01:02:03"'),
    # UUIDs: their usual string
    ("uuid", ID, b'"12345678-1234-5678-1234-567812345678"'),
    # enums: their value, whatever it is
    ("enum", Colour.RED, b"1"),
    ("str enum", Letter.A, b'"a"'),
    ("int enum", Level.HIGH, b"3"),
    ("enum of a tuple", Pair.ONE_TWO, b"[1,2]"),
    ("enum of nan", Odd.NAN, b"null"),
    ("enum of a date", Odd.WHEN, b'"2024-01-02"'),
    # subclasses of JSON's types: as their base type
    ("str subclass", Text("x"), b'"x"'),
    ("int subclass", Count(3), b"3"),
    ("float subclass", Ratio(1.5), b"1.5"),
    ("dict subclass", Record(a=1), b'{"a":1}'),
    ("OrderedDict", collections.OrderedDict(b=1, a=2), b'{"b":1,"a":2}'),
    ("Counter", collections.Counter("aab"), b'{"a":2,"b":1}'),
    ("namedtuple", Point(1, 2), b"[1,2]"),
    ("tuple", (1, "a"), b'[1,"a"]'),
    # keys that are not strings: as json writes them
    (
        "non-string keys",
        {1: "a", 2.5: "b", False: "c", None: "d"},
        b'{"1":"a","2.5":"b","false":"c","null":"d"}',
    ),
    ("str subclass key", {Text("k"): 1}, b'{"k":1}'),
    # integers of any size, exactly
    ("2**64", 2**64, b"18446744073709551616"),
    ("below -2**63", -(2**63) - 1, b"-9223372036854775809"),
    ("10**100", 10**100, b"1" + b"0" * 100),
    # text: UTF-8, and \\u escapes where UTF-8 cannot go
    ("controls", "\x00\x1f\x7f\u2028é", '"\\u0000\\u001f\x7f\u2028é"'.encode()),
    ("lone surrogate", "é\ud800", b'"\\u00e9\\ud800"'),
    # nesting deeper than orjson goes (254 levels)
    ("300 levels", _nested(299), b"[" * 300 + b"]" * 300),
]

# (name, result, the exception both codecs raise)
REFUSED: list[tuple[str, Any, type[Exception]]] = [
    ("key collision", {1: "a", "1": "b"}, ValueError),
    ("collision of true", [{"x": {True: 1, "true": 2}}], ValueError),
    ("collision of null", {None: 1, "null": 2}, ValueError),
    ("collision of 2.5", {"2.5": 1, 2.5: 2}, ValueError),
    ("nan key", {math.nan: 1}, ValueError),
    ("tuple key", {(1, 2): 3}, TypeError),
    ("enum key", {Colour.RED: 1}, TypeError),
    ("uuid key", {ID: 1}, TypeError),
    ("date key", {datetime.date(2024, 1, 2): 1}, TypeError),
    ("bytes", b"x", TypeError),
    ("bytearray", bytearray(b"x"), TypeError),
    ("set", {1}, TypeError),
    ("frozenset", frozenset({1}), TypeError),
    ("Decimal", decimal.Decimal("1.5"), TypeError),
    ("complex", 1j, TypeError),
    ("dataclass", Box(1), TypeError),
    ("object", object(), TypeError),
    ("generator", (n for n in range(3)), TypeError),
    ("function", len, TypeError),
    ("cycle", _cycle(), ValueError),
    ("an int of 5,000 digits", 10**5000, ValueError),
]


@pytest.mark.parametrize(("name", "result", "written"), WRITTEN, ids=[c[0] for c in WRITTEN])
def test_what_both_codecs_write(codec: str, name: str, result: Any, written: bytes) -> None:
    assert encode_result(result, 1) == b'{"id":1,"ok":true,"result":' + written + b"}\n"


@pytest.mark.parametrize(("name", "result", "error"), REFUSED, ids=[c[0] for c in REFUSED])
def test_what_both_codecs_refuse(
    codec: str, name: str, result: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode_result(result, 1)


def test_an_id_is_checked_like_a_result(codec: str) -> None:
    """Ids come from JSON (string keys only), but encode_result is public."""
    with pytest.raises(ValueError):
        encode_result("ok", {1: "a", "1": "b"})
    assert encode_result("ok", [{"k": 1}]) == b'{"id":[{"k":1}],"ok":true,"result":"ok"}\n'


@requires_orjson
def test_a_refusal_says_the_same_under_both_codecs() -> None:
    codecs = both_codecs()
    for name, result, _ in REFUSED:
        said = set()
        for dumps in codecs.values():
            with pytest.raises(Exception) as caught:
                dumps({"id": 1, "ok": True, "result": result})
            said.add(f"{type(caught.value).__name__}: {caught.value}")
        assert len(said) == 1, (name, said)
    with pytest.raises(ValueError) as caught:
        protocol._dumps({1: "a", "1": "b"})
    assert str(caught.value) == (
        "keys 1 and '1' are both written '1' in JSON, and one value would be lost"
    )


@requires_orjson
def test_floats_are_the_same_numbers_though_spelled_their_own_way() -> None:
    """The one documented difference in the bytes: json writes 1e-05 where
    orjson writes 0.00001 (which also shows orjson really wrote it)."""
    codecs = both_codecs()
    values = [1e-05, 1e-07, 7.8e-05, 0.1, 1e16, 1e22, 5e-324, 1.7976931348623157e308, -0.0]
    written = {name: dumps(values) for name, dumps in codecs.items()}
    assert written["json"] != written["orjson"]
    assert b"0.00001" in written["orjson"] and b"1e-05" in written["json"]
    for line in written.values():
        back = json.loads(line)
        assert [math.copysign(1, x) for x in back] == [math.copysign(1, x) for x in values]
        assert back == values


# Values an op might return: JSON's own, the odd types above, and refusals.
odd_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and the infinities included
    | st.text()  # lone surrogates included
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
    | st.uuids()
    | st.sampled_from([Colour.RED, Letter.A, Level.HIGH, Pair.ONE_TWO, Odd.NAN, Odd.WHEN])
    | st.builds(Text, st.text())
    | st.binary(max_size=3)
    | st.frozensets(st.integers(), max_size=2)
)
odd_keys = st.text() | st.integers() | st.floats() | st.booleans() | st.none() | st.uuids()
odd_values = st.recursive(
    odd_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(odd_keys, children, max_size=4)
    ),
    max_leaves=12,
)


def _has_float(value: Any) -> bool:
    if isinstance(value, float) or (isinstance(value, enum.Enum) and _has_float(value.value)):
        return True
    if isinstance(value, dict):
        return any(_has_float(k) or _has_float(v) for k, v in value.items())
    return isinstance(value, (list, tuple)) and any(_has_float(v) for v in value)


@requires_orjson
@given(result=odd_values)
@settings(max_examples=400, deadline=None)
def test_both_codecs_give_one_answer_for_any_value(result: Any) -> None:
    answers: list[bytes | str] = []
    for dumps in both_codecs().values():
        try:
            answers.append(dumps({"id": 1, "ok": True, "result": result}))
        except (TypeError, ValueError) as exc:
            answers.append(f"{type(exc).__name__}: {exc}")
    by_json, by_orjson = answers
    if isinstance(by_json, bytes) and isinstance(by_orjson, bytes) and _has_float(result):
        # The same numbers (repr tells 1 from 1.0), perhaps spelled apart.
        assert repr(json.loads(by_json)) == repr(json.loads(by_orjson))
    else:
        assert by_json == by_orjson


# --- through a real server ------------------------------------------------------------
ODD_RESULTS: dict[str, Any] = {
    "nan": math.nan,
    "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    "uuid": ID,
    "enum": Colour.RED,
    "keys": {1: "a", None: "b"},
    "huge": 2**70,
    "collision": {1: "a", "1": "b"},
    "set": {1, 2},
    "dataclass": Box(1),
}


def test_a_real_server_answers_odd_results_alike_under_each_codec(codec: str) -> None:
    ops = OpRegistry()

    @ops.op("odd")
    def odd(params, ctx):
        return ODD_RESULTS[params["name"]]

    log = LogCapture()
    with running_server(port=0, ops=ops, log=log) as server, Client(*server.address) as client:
        assert client.request("odd", name="nan") is None
        assert client.request("odd", name="when") == "2024-01-02T03:04:05+00:00"
        assert client.request("odd", name="uuid") == str(ID)
        assert client.request("odd", name="enum") == 1
        assert client.request("odd", name="keys") == {"1": "a", "null": "b"}
        # Written exactly by both; read back as the client's codec reads it.
        assert client.request("odd", name="huge") == protocol.decode_json(str(2**70).encode())
        for name, why in [
            ("collision", "ValueError: keys 1 and '1' are both written '1' in JSON"),
            ("set", "TypeError: Object of type set is not JSON serializable"),
            ("dataclass", "TypeError: Object of type Box is not JSON serializable"),
        ]:
            with pytest.raises(RemoteError) as caught:
                client.request("odd", name=name)
            assert caught.value.code == "op_failed"
            assert f"op 'odd' returned a result that cannot be sent as JSON: {why}" in (
                caught.value.message
            )
        # Each refusal was one reply: the connection is still in step.
        assert client.request("odd", name="enum") == 1
    errors = [line for line in log.lines if line.startswith("Error")]
    assert len(errors) == 3, errors
