"""JSON for records: the one place records are decoded from and encoded to JSON.

Two codecs, one behaviour. `Codec` is the standard library's `json`.
`MsgspecCodec` is `msgspec` (the ``[fast]`` extra) wherever msgspec gives what
`json` gives, and `json` itself for the rest, one document (or one batch of
lines) at a time, so a job's output and errors do not depend on the codec:

- decoding: a document msgspec decodes is decoded as `json` would (the
  property tests in tests/unit/test_codec_equivalence.py hold it to that); one
  it refuses (``NaN``, numbers beyond a double, lone surrogates, any error at
  all) is decoded again by `json`, which gives the value or its own error text.
- encoding: msgspec writes floats outside 1e-4 <= |x| < 1e16 without repr's
  exponent (``1e16``, not ``1e+16``), NaN as ``null``, and happily encodes what
  `json` refuses (datetimes, UUIDs, sets, dataclasses, enums, bytes...). So a
  record is first checked by `_msgspec_writes_as_json`, which admits only
  dicts with ``str`` keys, lists, tuples, ``str``, ``int``, ``bool``, None and
  floats that repr writes without an exponent, each of exactly that type; any
  other record goes to `json`, which writes it or raises its usual error.

The job's ``codec`` key picks one (`codec_for`): ``"auto"`` (msgspec when
installed), ``"msgspec"`` or ``"json"``.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from typing import Any, Final, get_args

from supervisor.config.model import CodecName

CODEC_NAMES: Final[tuple[str, ...]] = get_args(CodecName)
INSTALL_HINT: Final = "pip install 'stream-supervisor[fast]'"

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_compact_nan = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ascii = json.JSONEncoder().encode
_dead_letter = json.JSONEncoder(ensure_ascii=False, default=repr).encode
_loads = json.loads


def msgspec_installed() -> bool:
    """Whether the ``[fast]`` extra's msgspec can be imported (without importing it)."""
    return importlib.util.find_spec("msgspec") is not None


class Codec:
    """The standard library's `json`; every method is also `MsgspecCodec`'s fallback."""

    name: str = "json"

    def loads(self, data: bytes | str) -> Any:
        """`json.loads(data)`: the value, or json's `ValueError`."""
        return _loads(data)

    def line_decoder(self) -> Callable[[bytes], Any] | None:
        """A fast decoder of one line's bytes, or None (here): whatever it returns is what
        `json.loads` returns for the line decoded (it accepts only UTF-8, and a trailing
        "\r" is whitespace to both); a line it raises ValueError or RecursionError
        for (deeper than its limit) is for the caller's
        own json path, which gives that line's value or error as before."""
        return None

    def dumps(self, value: Any) -> str:
        """Compact JSON, non-ASCII as it is; ValueError for NaN and infinities."""
        return _compact(value)

    def dumps_utf8(self, value: Any) -> bytes:
        """`dumps` as UTF-8 (UnicodeEncodeError for a lone surrogate)."""
        return _compact(value).encode()

    def dumps_allow_nan(self, value: Any) -> str:
        """`dumps`, but NaN and infinities written as ``NaN``, ``Infinity``, ``-Infinity``."""
        return _compact_nan(value)

    def dump_lines(self, records: Sequence[Any]) -> bytes:
        """One compact document per record, each ending in a newline, as UTF-8."""
        if not records:
            return b""
        return ("\n".join(map(_compact, records)) + "\n").encode()


class MsgspecCodec(Codec):
    """msgspec where its result is json's; json for everything else (see the module doc)."""

    name = "msgspec"

    def __init__(self) -> None:
        import msgspec  # the [fast] extra: imported only by a job that uses it

        self._decode: Callable[[bytes | str], Any] = msgspec.json.Decoder().decode
        encoder = msgspec.json.Encoder()
        self._encode: Callable[[Any], bytes] = encoder.encode
        self._encode_lines: Callable[[Any], bytes] = encoder.encode_lines

    def loads(self, data: bytes | str) -> Any:
        try:
            return self._decode(data)
        except (ValueError, RecursionError):
            return _loads(data)  # json's value, or json's error text

    def line_decoder(self) -> Callable[[bytes], Any] | None:
        return self._decode

    def dumps(self, value: Any) -> str:
        if _msgspec_writes_as_json(value):
            try:
                return self._encode(value).decode()
            except (TypeError, ValueError, RecursionError):
                pass  # json raises its own error, or (too deep for msgspec) writes it
        return _compact(value)

    def dumps_utf8(self, value: Any) -> bytes:
        if _msgspec_writes_as_json(value):
            try:
                return self._encode(value)
            except (TypeError, ValueError, RecursionError):
                pass
        return _compact(value).encode()

    def dumps_allow_nan(self, value: Any) -> str:
        if _msgspec_writes_as_json(value):
            try:
                return self._encode(value).decode()
            except (TypeError, ValueError, RecursionError):
                pass
        return _compact_nan(value)

    def dump_lines(self, records: Sequence[Any]) -> bytes:
        if not records:
            return b""
        if all(map(_msgspec_writes_as_json, records)):
            try:
                return self._encode_lines(records)
            except (TypeError, ValueError, RecursionError):
                pass
        # The whole batch, so that an error (a lone surrogate's position) is json's.
        return Codec.dump_lines(self, records)


def _msgspec_writes_as_json(value: Any) -> bool:
    """Whether msgspec's compact encoding of `value` is json's, byte for byte.

    Admits only the types json writes natively, exactly (no subclasses: an IntEnum or
    a str subclass is json's business), and floats repr writes without an exponent.
    One loop per container: this runs for every record, so it is kept flat.
    """
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return False
            kind = type(item)
            if kind is str or kind is int or kind is bool or item is None:
                continue
            if kind is float:
                if not (1e-4 <= abs(item) < 1e16 or item == 0.0):
                    return False
            elif not _msgspec_writes_as_json(item):
                return False
        return True
    if kind is list or kind is tuple:
        for item in value:
            kind = type(item)
            if kind is str or kind is int or kind is bool or item is None:
                continue
            if kind is float:
                if not (1e-4 <= abs(item) < 1e16 or item == 0.0):
                    return False
            elif not _msgspec_writes_as_json(item):
                return False
        return True
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is float:
        return bool(1e-4 <= abs(value) < 1e16 or value == 0.0)
    return False


JSON: Final = Codec()
"""The standard library's codec: what a job with ``codec = "json"`` uses."""
_msgspec: MsgspecCodec | None = None


def codec_for(name: CodecName) -> Codec:
    """The codec a job's ``codec`` setting names; "auto" is msgspec when it is installed.

    "msgspec" without msgspec raises ImportError (the configuration check refuses that
    job first, naming the extra to install).
    """
    global _msgspec
    if name == "json" or (name == "auto" and not msgspec_installed()):
        return JSON
    if _msgspec is None:
        _msgspec = MsgspecCodec()
    return _msgspec


def dumps_ascii(value: Any) -> str:
    """`json.dumps(value)`: ASCII only, ``", "`` and ``": "`` separators. What exec
    programs are sent (docs/exec.md); msgspec has no such output, so always json."""
    return _ascii(value)


def dead_letter_line(entry: dict[str, Any]) -> str:
    """A dead-letter file's line: json always, for its format (spaced separators,
    NaN as written, anything else as its repr) is the file's, and the path is rare."""
    return _dead_letter(entry) + "\n"
