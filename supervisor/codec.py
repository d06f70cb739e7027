"""JSON for records: the one place records are decoded from and encoded to JSON.

`Codec` is the standard library's `json`, as every record path used it before
(compact, non-ASCII as it is, NaN refused). `supervisor.codec_msgspec.MsgspecCodec`
(the ``[fast]`` extra) gives the same values, bytes and errors for everything
json can read or write, several times faster; it differs only for Python values
json cannot write at all (there json raises TypeError; see its module).

A job's ``codec`` key picks one (`supervisor.codec_choice`). Two formats stay json's whatever the
codec, since msgspec has no such output: what exec programs are sent
(`dumps_ascii`) and dead-letter lines (`dead_letter_line`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Final

COMPACT: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
"""What the sinks write: compact, non-ASCII as it is, NaN and infinities refused."""
COMPACT_NAN: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
"""`COMPACT`, NaN and infinities written as ``NaN``, ``Infinity``, ``-Infinity``."""
_ascii = json.JSONEncoder().encode
_dead_letter = json.JSONEncoder(ensure_ascii=False, default=repr).encode
json_loads = json.loads


class Codec:
    """The standard library's `json`; what every other codec must give, and its fallback."""

    name: str = "json"

    def loads(self, data: bytes | str) -> Any:
        """`json.loads(data)`: the value, or json's `ValueError`."""
        return json_loads(data)

    def line_decoder(self) -> Callable[[bytes], Any] | None:
        """A fast decoder of one line's bytes, or None (here): whatever it returns is what
        `json.loads` returns for the line decoded (it accepts only UTF-8, and a trailing
        "\r" is whitespace to both); a line it raises ValueError or RecursionError for
        goes the caller's own json path, which gives that line's value or error."""
        return None

    def dumps(self, value: Any) -> str:
        """Compact JSON, non-ASCII as it is; ValueError for NaN and infinities."""
        return COMPACT(value)

    def dumps_utf8(self, value: Any) -> bytes:
        """`dumps` as UTF-8 (UnicodeEncodeError for a lone surrogate)."""
        return COMPACT(value).encode()

    def dumps_allow_nan(self, value: Any) -> str:
        """`dumps`, but NaN and infinities written as ``NaN``, ``Infinity``, ``-Infinity``."""
        return COMPACT_NAN(value)

    def dump_lines(self, records: Sequence[Any]) -> bytes:
        """One compact document per record, each ending in a newline, as UTF-8."""
        if not records:
            return b""
        return ("\n".join(map(COMPACT, records)) + "\n").encode()


JSON: Final = Codec()
"""The standard library's codec: what a job with ``codec = "json"`` uses."""


def dumps_ascii(value: Any) -> str:
    """`json.dumps(value)`: ASCII only, ``", "`` and ``": "`` separators. What exec
    programs are sent (docs/exec.md); msgspec has no such output, so always json."""
    return _ascii(value)


def dead_letter_line(entry: dict[str, Any]) -> str:
    """A dead-letter file's line: json always, for its format (spaced separators,
    NaN as written, anything else as its repr) is the file's, and the path is rare."""
    return _dead_letter(entry) + "\n"
