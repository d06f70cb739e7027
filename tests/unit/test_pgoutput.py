"""The pgoutput decoder against messages built to the protocol's layout ("Logical
Replication Message Formats", protocol version 1): what goes in comes out, and bytes
that are not such a message give `DecodeError`, never another exception."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.connectors.postgres.pgoutput import DecodeError, Decoder

INT4, TEXT, BOOL, JSONB = 23, 25, 16, 3802


def _string(text: str) -> bytes:
    return text.encode() + b"\x00"


def begin() -> bytes:
    return b"B" + struct.pack("!QQI", 0x16_0000_0000, 0, 7)


def commit(end_lsn: int) -> bytes:
    return b"C" + struct.pack("!BQQQ", 0, max(end_lsn - 8, 0), end_lsn, 0)


def relation(oid: int, name: str, columns: list[tuple[str, int, bool]]) -> bytes:
    out = b"R" + struct.pack("!I", oid) + _string("public") + _string(name) + b"d"
    out += struct.pack("!H", len(columns))
    for column, type_oid, is_key in columns:
        out += struct.pack("!B", 1 if is_key else 0) + _string(column)
        out += struct.pack("!Ii", type_oid, -1)
    return out


def tuple_data(values: list[str | None]) -> bytes:
    out = struct.pack("!H", len(values))
    for value in values:
        if value is None:
            out += b"n"
        else:
            encoded = value.encode()
            out += b"t" + struct.pack("!I", len(encoded)) + encoded
    return out


def insert(oid: int, values: list[str | None]) -> bytes:
    return b"I" + struct.pack("!I", oid) + b"N" + tuple_data(values)


def delete(oid: int, key: list[str | None]) -> bytes:
    return b"D" + struct.pack("!I", oid) + b"K" + tuple_data(key)


COLUMNS = [("id", INT4, True), ("name", TEXT, False), ("ok", BOOL, False), ("doc", JSONB, False)]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
rows = st.lists(
    st.tuples(
        st.integers(-(2**31), 2**31 - 1),
        st.none()
        | st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")),
        st.none() | st.booleans(),
        json_values,
    ),
    max_size=8,
)


@given(rows=rows, deleted=st.integers(-(2**31), 2**31 - 1), end_lsn=st.integers(1, 2**63))
def test_a_transaction_comes_out_as_it_went_in(
    rows: list[tuple[int, str | None, bool | None, Any]], deleted: int, end_lsn: int
) -> None:
    decoder = Decoder()
    assert decoder.feed(begin()) is None
    assert decoder.feed(relation(16384, "orders", COLUMNS)) is None
    for id_, name, ok, doc in rows:
        flag = None if ok is None else ("t" if ok else "f")
        assert decoder.feed(insert(16384, [str(id_), name, flag, json.dumps(doc)])) is None
    assert decoder.feed(delete(16384, [str(deleted)])) is None
    transaction = decoder.feed(commit(end_lsn))
    assert transaction is not None
    assert transaction.end_lsn == end_lsn
    expected: list[dict[str, Any]] = [
        {
            "op": "insert",
            "table": "public.orders",
            "key": {"id": id_},
            "values": {"id": id_, "name": name, "ok": ok, "doc": doc},
        }
        for id_, name, ok, doc in rows
    ]
    expected.append({"op": "delete", "table": "public.orders", "key": {"id": deleted}})
    assert transaction.changes == expected


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_bytes_that_are_not_a_message_give_only_a_decode_error(first: bytes, second: bytes) -> None:
    decoder = Decoder()
    decoder.feed(begin())
    decoder.feed(relation(16384, "orders", COLUMNS))
    for data in (first, second, insert(16384, ["1"])[: len(first) % 20]):
        with contextlib.suppress(DecodeError):
            decoder.feed(data)


def test_a_value_cut_short_is_an_error_not_a_shorter_value() -> None:
    decoder = Decoder()
    decoder.feed(begin())
    decoder.feed(relation(16384, "orders", COLUMNS))
    with pytest.raises(DecodeError, match="runs past the message's end"):
        decoder.feed(insert(16384, ["1", "x"])[:-1])
