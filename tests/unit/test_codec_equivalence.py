"""The msgspec codec gives json's bytes, values and errors, for any value and any line."""

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
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.codec import JSON, Codec
from supervisor.codec_choice import codec_for
from supervisor.connectors.exec.lines import json_line_parser
from supervisor.connectors.file.lines import LineBuffer

msgspec = pytest.importorskip("msgspec")  # the [fast] extra; CI installs it

FAST = codec_for("msgspec")

# Every string, lone surrogates included (the default alphabet leaves them out).
any_text = st.text(st.characters(codec=None, categories=None, exclude_categories=()))
any_float = st.floats() | st.sampled_from([1e16, 1e-4, 9.999999999999999e-05, 1e22, 5e-324])
any_int = st.integers() | st.integers(min_value=2**62, max_value=2**200).map(lambda n: -n)
scalars = st.none() | st.booleans() | any_int | any_float | any_text
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(any_text, inner, max_size=5)
        | st.dictionaries(
            any_text | any_float | any_int | st.booleans() | st.none(), inner, max_size=3
        )
        | st.tuples(inner, inner)
    ),
    max_leaves=30,
)


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    """What a call did, comparable: the repr of its value (types, key order, -0.0 and
    NaN shown), or its exception's type and message."""
    try:
        return "value", repr(call())
    except Exception as exc:
        return type(exc).__name__, str(exc)


def same(call: Callable[[Codec], Any]) -> None:
    assert outcome(lambda: call(FAST)) == outcome(lambda: call(JSON))


@settings(max_examples=600)
@given(json_values)
def test_encoding_any_value_gives_json_bytes_or_json_error(value: Any) -> None:
    """dumps, dumps_utf8, dumps_allow_nan and dump_lines agree with json on every value."""
    same(lambda codec: codec.dumps(value))
    same(lambda codec: codec.dumps_utf8(value))
    same(lambda codec: codec.dumps_allow_nan(value))
    same(lambda codec: codec.dump_lines([value, value]))


@settings(max_examples=200)
@given(st.lists(json_values, max_size=8))
def test_a_batch_of_lines_is_json_bytes_or_json_error(values: list[Any]) -> None:
    """One odd record in a batch makes the whole batch json's, error position included."""
    same(lambda codec: codec.dump_lines(values))


@settings(max_examples=600)
@given(json_values, st.booleans())
def test_decoding_any_document_gives_json_value(value: Any, ascii_only: bool) -> None:
    """A document json writes (NaN, wide integers, escaped surrogates...) decodes as json
    decodes it, from text and from bytes."""
    try:
        text = json.dumps(value, ensure_ascii=ascii_only)
    except ValueError:
        return  # an integer beyond Python's digit limit: no document to read
    same(lambda codec: codec.loads(text))
    data = text.encode("utf-8", "surrogatepass")
    same(lambda codec: codec.loads(data))
    compare_lines([data, data + b"\r", b" " + data + b"\t"])


# Pieces of almost-JSON: what msgspec and json might read differently.
PIECES = [
    '{"a":', "[", "]", "{", "}", ",", ":", '"', "\\", "\\u", "d800", "NaN", "-Infinity",
    "1e400", "-0", "0.1", "1E+2", "00", "true", "nul", " ", "\t", "\r", "\x0c", "\xa0",
    "\ufeff", "é", "\x00", "\x1f", "18446744073709551616", '"\\ud83d\\ude00"', "'",
]  # fmt: skip
json_ish = st.lists(st.sampled_from(PIECES) | any_text, max_size=12).map("".join)
any_line = st.binary(max_size=40) | json_ish.map(lambda s: s.encode("utf-8", "surrogatepass"))


@settings(max_examples=1500)
@given(any_line)
def test_any_line_decodes_to_json_value_or_json_error(line: bytes) -> None:
    """Arbitrary bytes and JSON-ish text: same value, or same exception and message."""
    same(lambda codec: codec.loads(line))
    text = line.decode("utf-8", "replace")
    same(lambda codec: codec.loads(text))
    same(lambda codec: json_line_parser(codec)(line))


@settings(max_examples=400)
@given(st.lists(any_line, max_size=8))
def test_jsonl_lines_give_json_records_and_bad_lines(lines: list[bytes]) -> None:
    """The file source's jsonl parsing: same records, same bad lines, errors and places."""
    compare_lines([line.replace(b"\n", b" ") for line in lines])


def compare_lines(lines: list[bytes]) -> None:
    def taken(codec: Codec) -> Any:
        buffer = LineBuffer(jsonl=True, codec=codec)
        buffer.add(b"\n".join(lines) + b"\n")
        got = buffer.take(len(lines) + 1)
        bad = [(b.at, b.text, b.error.msg, b.error.pos, str(b.error)) for b in got.bad]
        return got.records, bad, got.consumed

    same(taken)


class Colour(enum.Enum):
    RED = "red"


class Size(enum.IntEnum):
    SMALL = 1


class Name(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


@dataclasses.dataclass
class Point:
    x: int


Pair = collections.namedtuple("Pair", "a b")

ODD_BUT_JSON = [
    Size.SMALL,
    Name("n"),
    Count(3),
    Ratio(1e16),
    Ratio(0.5),
    Pair(1, 2),
    collections.OrderedDict(a=1),
    {1: "int key"},
    {1e16: "float key"},
    {1e-5: "float key"},
    {math.nan: "nan key"},
    {True: "bool key"},
    {None: "none key"},
    {Name("k"): "str-subclass key"},
    math.nan,
    -math.inf,
    10**5000,
    "\udcff",
    object(),
]
"""Values json writes (or refuses) in its own way, which the msgspec codec must follow."""


@pytest.mark.parametrize("value", ODD_BUT_JSON, ids=lambda value: type(value).__name__)
def test_odd_values_json_handles_give_json_bytes_or_json_error(value: Any) -> None:
    """Subclasses, enums json writes as numbers, non-str keys, NaN, huge integers and
    lone surrogates: json's bytes or json's error, alone, in a list, in a dict, and
    alongside a float that sends the record the slow way."""
    for wrapped in (value, [value], {"k": value}, [value, 1e16]):
        same_encodings(wrapped)


def same_encodings(value: Any) -> None:
    same(lambda codec: codec.dumps(value))
    same(lambda codec: codec.dumps_utf8(value))
    same(lambda codec: codec.dump_lines([value]))
    same(lambda codec: codec.dumps_allow_nan(value))


JSON_REFUSES = [
    datetime.datetime(2024, 1, 2, 3, 4, 5),
    datetime.date(2024, 1, 2),
    datetime.time(1, 2),
    datetime.timedelta(seconds=3),
    uuid.UUID(int=7),
    decimal.Decimal("1.5"),
    b"bytes",
    bytearray(b"x"),
    {1, 2},
    frozenset({3}),
    Point(1),
    Colour.RED,
    {Colour.RED: "enum key"},
]
"""Values json cannot write at all (TypeError) and msgspec can: the codecs' one difference."""


@pytest.mark.parametrize("value", JSON_REFUSES, ids=lambda value: type(value).__name__)
def test_values_json_refuses_are_written_as_msgspec_converts_them(value: Any) -> None:
    """What json refuses with a TypeError the msgspec codec writes as msgspec.to_builtins
    turns it (an ISO date, a list...), and the rest of the record as json writes it,
    whichever way the record goes (alongside 1e16 or NaN it goes json's way)."""
    for wrapped in (value, [value], {"k": value}, [value, 1e16], {"k": value, "n": None}):
        with pytest.raises(TypeError):
            JSON.dumps(wrapped)
        builtins = msgspec.to_builtins(wrapped)
        assert FAST.dumps(wrapped) == JSON.dumps(builtins)
        assert FAST.dump_lines([wrapped, 1]) == JSON.dump_lines([builtins, 1])
        assert FAST.dumps_utf8(wrapped) == JSON.dumps_utf8(builtins)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        FAST.dumps([value, math.nan])


def test_deep_nesting_decodes_as_json_does() -> None:
    """A document deeper than msgspec's limit is json's: its value or its RecursionError."""
    for depth in (500, 2000, 100_000):
        document = "[" * depth + "]" * depth
        same(partial(load, data=document))


def test_the_fast_codec_is_msgspec() -> None:
    """codec_for("msgspec") is the msgspec codec, "json" the standard library's."""
    assert FAST.name == "msgspec"
    assert codec_for("json") is JSON
    assert codec_for("auto") is FAST
    assert FAST.dumps({"a": [1, 2.5, None, True, "é"]}) == '{"a":[1,2.5,null,true,"é"]}'


def load(codec: Codec, data: str) -> Any:
    return codec.loads(data)


def parse_line(codec: Codec, line: bytes) -> Any:
    return json_line_parser(codec)(line)


def test_deep_lines_decode_as_json_does() -> None:
    """A line deeper than msgspec's limit is json's, in the file source and exec lines."""
    for depth in (500, 2000):
        line = b"[" * depth + b"]" * depth
        same(partial(parse_line, line=line))
        compare_lines([b"1", line])
