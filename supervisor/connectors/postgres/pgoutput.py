"""Decoding PostgreSQL's ``pgoutput`` logical replication messages (protocol version 1).

`pg_logical_slot_peek_binary_changes(..., 'proto_version', '1', 'publication_names',
..., 'messages', 'true')` returns one message per row: Begin, Relation (a table's
columns, sent before its first change in each decoding session), Insert / Update /
Delete / Truncate, Message (`pg_logical_emit_message`), Commit. `Decoder` keeps the
relations it has seen and turns the rest into `Transaction`s of change records.

Column values arrive in PostgreSQL's text output; the JSON-friendly types become JSON
values (integers, floating point and numeric numbers, booleans, json/jsonb documents),
every other type stays the text PostgreSQL prints (timestamps, arrays, uuid, ...). A
TOASTed value an update left unchanged is not sent by the server: it is left out of
``values``. Reference: "Logical Replication Message Formats" in PostgreSQL's manual.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

HEARTBEAT_PREFIX = "stream-supervisor-heartbeat"
"""The prefix of the transactional messages the source emits on an idle database."""

_INTEGERS = frozenset({20, 21, 23, 26})  # int8, int2, int4, oid
_FLOATS = frozenset({700, 701})  # float4, float8
_NUMERIC = 1700
_BOOL = 16
_JSON = frozenset({114, 3802})  # json, jsonb

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


class DecodeError(ValueError):
    """A message this decoder does not understand (a protocol it was not written for)."""


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL prints it: ``16/B374D848``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_value(text: str) -> int:
    """``16/B374D848`` as a number; ValueError if it is not one."""
    high, _, low = text.partition("/")
    if not _ or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(slots=True)
class Relation:
    table: str
    """``schema.name``."""
    columns: list[tuple[str, int, bool]]
    """(name, type oid, part of the replica identity key) in the table's order."""


@dataclass(slots=True)
class Transaction:
    """The changes of one committed transaction, in order."""

    end_lsn: int = 0
    """Right after its commit record: where the slot moves to once it is delivered."""
    changes: list[dict[str, Any]] = field(default_factory=list)


class Decoder:
    """Turns the rows of a peek into transactions; keeps the relations across peeks."""

    def __init__(self) -> None:
        self.relations: dict[int, Relation] = {}
        self._open: Transaction | None = None

    def feed(self, data: bytes) -> Transaction | None:
        """One message; the transaction it completes (a Commit), if any. `DecodeError`,
        and nothing else, for a message that is cut short or not pgoutput's."""
        try:
            return self._feed(data)
        except DecodeError:
            raise
        # A truncated message runs off its end (struct, index); a wrong one may carry
        # text that is not UTF-8 or JSON that is not JSON: all are the message's fault.
        except (struct.error, IndexError, ValueError) as exc:
            raise DecodeError(f"malformed pgoutput message {data[:1]!r}: {exc}") from None

    def _feed(self, data: bytes) -> Transaction | None:
        kind = data[:1]
        if kind == b"B":
            self._open = Transaction()
        elif kind == b"C":
            transaction, self._open = self._open, None
            if transaction is None:
                raise DecodeError("a Commit without its Begin")
            # flags (1), commit LSN (8), end LSN (8), timestamp (8)
            transaction.end_lsn = _U64.unpack_from(data, 10)[0]
            return transaction
        elif kind == b"R":
            self._relation(data)
        elif kind in (b"I", b"U", b"D"):
            self._current().changes.append(self._change(kind, data))
        elif kind == b"T":
            self._truncate(data)
        elif kind in (b"M", b"Y", b"O"):
            # A logical message (ours are heartbeats: they only move the position), a
            # type's name (values are decoded by type oid), a replication origin.
            pass
        else:
            raise DecodeError(f"unknown pgoutput message {kind!r}")
        return None

    def _current(self) -> Transaction:
        if self._open is None:
            raise DecodeError("a change outside a transaction")
        return self._open

    def _relation(self, data: bytes) -> None:
        oid = _U32.unpack_from(data, 1)[0]
        schema, at = _string(data, 5)
        name, at = _string(data, at)
        at += 1  # replica identity setting
        count = _U16.unpack_from(data, at)[0]
        at += 2
        columns = []
        for _ in range(count):
            flags = data[at]
            column, at = _string(data, at + 1)
            type_oid = _U32.unpack_from(data, at)[0]
            at += 8  # type oid, type modifier
            columns.append((column, type_oid, bool(flags & 1)))
        self.relations[oid] = Relation(f"{schema or 'pg_catalog'}.{name}", columns)

    def _change(self, kind: bytes, data: bytes) -> dict[str, Any]:
        oid = _U32.unpack_from(data, 1)[0]
        relation = self.relations.get(oid)
        if relation is None:
            raise DecodeError(f"a change of relation {oid} before its Relation message")
        at = 5
        old: dict[str, Any] | None = None
        old_kind = b""
        if data[at : at + 1] in (b"K", b"O"):
            old_kind = data[at : at + 1]
            old, at = _tuple(data, at + 1, relation)
        new: dict[str, Any] | None = None
        if kind != b"D":
            if data[at : at + 1] != b"N":
                raise DecodeError(f"expected a new tuple in {kind!r}")
            new, _ = _tuple(data, at + 1, relation)
        keys = [column for column, _, is_key in relation.columns if is_key]
        if kind == b"I":
            assert new is not None
            return {"op": "insert", "table": relation.table, "key": _pick(new, keys), "values": new}
        if kind == b"U":
            assert new is not None
            change = {"op": "update", "table": relation.table, "key": _pick(new, keys)}
            change["values"] = new
            if old is not None:
                # The key changed (K), or the table's REPLICA IDENTITY is FULL (O).
                change["old_key"] = _pick(old, keys)
                if old_kind == b"O":
                    change["old_values"] = old
            return change
        assert old is not None
        change = {"op": "delete", "table": relation.table, "key": _pick(old, keys)}
        if old_kind == b"O":
            change["old_values"] = old
        return change

    def _truncate(self, data: bytes) -> None:
        count = _U32.unpack_from(data, 1)[0]
        at = 6  # count, options
        for _ in range(count):
            oid = _U32.unpack_from(data, at)[0]
            at += 4
            relation = self.relations.get(oid)
            table = relation.table if relation is not None else str(oid)
            self._current().changes.append({"op": "truncate", "table": table})


def _string(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\x00", at)
    return data[at:end].decode(), end + 1


def _tuple(data: bytes, at: int, relation: Relation) -> tuple[dict[str, Any], int]:
    count = _U16.unpack_from(data, at)[0]
    at += 2
    if count > len(relation.columns):
        raise DecodeError(f"{count} columns for {relation.table}, which has fewer")
    values: dict[str, Any] = {}
    columns = relation.columns
    for index in range(count):
        kind = data[at]
        at += 1
        if kind == 0x74:  # 't': text
            size = _U32.unpack_from(data, at)[0]
            at += 4
            if at + size > len(data):  # a slice would quietly give less
                raise DecodeError(f"a value of {size} bytes runs past the message's end")
            name, type_oid, _ = columns[index]
            values[name] = _value(data[at : at + size].decode(), type_oid)
            at += size
        elif kind == 0x6E:  # 'n': NULL
            values[columns[index][0]] = None
        elif kind == 0x75:  # 'u': unchanged TOASTed value, not sent: left out
            continue
        else:
            raise DecodeError(f"unknown tuple column kind {kind!r}")
    return values, at


def _value(text: str, type_oid: int) -> Any:
    if type_oid in _INTEGERS:
        return int(text)
    if type_oid == _BOOL:
        return text == "t"
    if type_oid in _JSON:
        return json.loads(text)
    if type_oid in _FLOATS or type_oid == _NUMERIC:
        if type_oid == _NUMERIC and "." not in text and text.lstrip("-").isdigit():
            return int(text)
        number = float(text)
        return number if math.isfinite(number) else text
    return text


def _pick(values: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {key: values.get(key) for key in keys}
