"""The ``[fast]`` codec: msgspec wherever it gives what json gives, json for the rest.

Decoding: a document msgspec decodes, it decodes as json does (the property
tests in tests/unit/test_codec_equivalence.py hold it to that). One it refuses
(``NaN``, a number beyond a double, a lone surrogate, bytes that are not UTF-8,
deeper than its limit, any error at all) is decoded again by json, which gives
the value or its own error text.

Encoding: msgspec's bytes are json's for every value json can write, except
floats that repr writes with an exponent (msgspec: ``1e16``, ``1e-7`` or
``0.00001``; repr: ``1e+16``, ``1e-07``, ``1e-05``) and NaN and infinities
(msgspec: ``null``; json: ValueError). Checking every value's type and range
in Python costs more than msgspec's whole encoding (bench/README.md), so the
output is checked instead (`MsgspecCodec._as_json`) and a record in doubt is
written by json. What json cannot write at all (a datetime, date, time,
timedelta, UUID, Decimal, bytes, set, frozenset, dataclass, attrs class or Enum
member; json raises TypeError) is written as msgspec writes it, the one
difference from the json codec: `msgspec.to_builtins` turns it into JSON
values first (an ISO 8601 string, a list...) when json writes the rest.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from supervisor.codec import COMPACT, COMPACT_NAN, Codec, json_loads

_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)
_EXPONENT = re.compile(rb'e-?[0-9]+(?:[,\]}\n"]|\Z)')
"""An exponent as msgspec writes it (repr writes ``e+16``, ``e-07``), ending a number
(or a float dict key). Led by a literal, so the search skips from one "e" to the next."""
_NON_FINITE_DOUBLE = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")
"""msgpack's float 64 with every exponent bit set: NaN or an infinity (or, harmlessly,
bytes of an integer that look the same; UTF-8 text never holds these pairs)."""


class MsgspecCodec(Codec):
    """msgspec where its result is json's; json for everything else (see the module doc)."""

    name = "msgspec"

    def __init__(self) -> None:
        self._decode: Callable[[bytes | str], Any] = msgspec.json.Decoder().decode
        encoder = msgspec.json.Encoder()
        self._encode: Callable[[Any], bytes] = encoder.encode
        self._encode_lines: Callable[[Any], bytes] = encoder.encode_lines
        self._pack: Callable[[Any], bytes] = msgspec.msgpack.Encoder().encode

    def loads(self, data: bytes | str) -> Any:
        try:
            return self._decode(data)
        except (ValueError, RecursionError):
            return json_loads(data)  # json's value, or json's error text

    def line_decoder(self) -> Callable[[bytes], Any] | None:
        return self._decode

    def dumps(self, value: Any) -> str:
        return self._text(value, COMPACT)

    def dumps_allow_nan(self, value: Any) -> str:
        return self._text(value, COMPACT_NAN)

    def dumps_utf8(self, value: Any) -> bytes:
        try:
            out: bytes | None = self._encode(value)
        except _ENCODE_ERRORS:
            out = None
        if out is not None and self._as_json(out, value):
            return out
        return _json(value, COMPACT).encode()  # a lone surrogate: json's error

    def dump_lines(self, records: Sequence[Any]) -> bytes:
        if not records:
            return b""
        try:
            out: bytes | None = self._encode_lines(records)
        except _ENCODE_ERRORS:
            out = None
        if out is not None and self._as_json(out, records):
            return out
        # Record by record, then joined and encoded as json's path does it, so that an
        # error is json's (a lone surrogate's position counts in the whole batch).
        texts = [self._text(record, COMPACT) for record in records]
        return ("\n".join(texts) + "\n").encode()

    def _text(self, value: Any, compact: Callable[[Any], str]) -> str:
        try:
            out = self._encode(value)
        except _ENCODE_ERRORS:
            return _json(value, compact)
        if self._as_json(out, value):
            return out.decode()
        return _json(value, compact)

    def _as_json(self, out: bytes, value: Any) -> bool:
        """Whether `out`, msgspec's encoding of `value`, is what `_json` gives. False
        when in doubt: a string that looks like a number of the kind looked for
        (``"3e5"``) only sends its record the slower way.

        A float repr writes with an exponent comes out of msgspec as an exponent with
        neither sign nor padding, or (1e-6 <= |x| < 1e-4) as ``0.0000...``: both are
        looked for in the bytes. NaN and infinities come out as ``null``: where there
        is a ``null``, the value's msgpack form is searched for a non-finite double.
        """
        if b"0.0000" in out or _EXPONENT.search(out):
            return False
        if b'nan":' in out or b'inf":' in out:
            return False  # a NaN or infinite float key (json: "NaN", or ValueError)
        if b"null" not in out:
            return True
        try:
            packed = self._pack(value)
        except _ENCODE_ERRORS:
            return False
        return _NON_FINITE_DOUBLE.search(packed) is None


def _json(value: Any, compact: Callable[[Any], str]) -> str:
    """json's text for `value`, once msgspec has turned what json cannot write (a
    datetime, a set, a dataclass...) into the JSON values it writes for them."""
    with contextlib.suppress(*_ENCODE_ERRORS):  # else json's text for it, or json's error
        value = msgspec.to_builtins(value)
    return compact(value)
