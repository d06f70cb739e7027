"""The program's output, line by line, within a bound: what the source and the sink share.

A line longer than the limit is not kept whole: only its start, to show in an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from supervisor.codec import Codec

SHOWN = 80
"""Characters of a bad line shown in its error."""

_raw_decode = json.JSONDecoder().raw_decode


def parse_json_line(line: bytes) -> Any:
    """`json.loads(line)`, faster for the common line (no leading blanks): ValueError
    (UnicodeDecodeError included) for what is not one JSON document in UTF-8."""
    text = line.decode()
    try:
        value, end = _raw_decode(text)
    except ValueError:
        return json.loads(text)  # leading blanks, or the error as json.loads words it
    if end != len(text) and not text[end:].isspace():
        return json.loads(text)  # raises "Extra data"
    return value


def json_line_parser(codec: Codec) -> Callable[[bytes], Any]:
    """`parse_json_line`, first through the codec's fast decoder when it has one."""
    fast = codec.line_decoder()
    if fast is None:
        return parse_json_line

    def parse(line: bytes) -> Any:
        try:
            return fast(line)
        except (ValueError, RecursionError):
            return parse_json_line(line)  # json's value, or json's error

    return parse


@dataclass(frozen=True, slots=True)
class LongLine:
    """A line longer than the limit: only its start is kept."""

    start: bytes


def shown(data: bytes) -> str:
    """The start of a line as shown in an error: decoded, at most `SHOWN` characters."""
    text = data[:SHOWN].decode("utf-8", "replace")
    return repr(text + ("..." if len(data) > SHOWN else ""))


class LineSplitter:
    """Bytes in, complete lines out; what is held never exceeds the line limit."""

    def __init__(self, max_line_bytes: int) -> None:
        self._max = max_line_bytes
        self._partial = bytearray()
        self._discarding = False
        """Inside a long line already reported: dropped up to its newline."""

    def feed(self, chunk: bytes) -> list[bytes | LongLine]:
        lines: list[bytes | LongLine] = []
        start = 0
        while True:
            newline = chunk.find(b"\n", start)
            if newline < 0:
                break
            if self._discarding:
                self._discarding = False
            elif self._partial:
                self._partial += chunk[start:newline]
                lines.append(self._finish(bytes(self._partial)))
                self._partial.clear()
            else:
                lines.append(self._finish(chunk[start:newline]))
            start = newline + 1
        if start < len(chunk) and not self._discarding:
            self._partial += chunk[start:]
            if len(self._partial) > self._max:
                lines.append(LongLine(bytes(self._partial[:SHOWN])))
                self._partial.clear()
                self._discarding = True
        return lines

    def _finish(self, line: bytes) -> bytes | LongLine:
        return line if len(line) <= self._max else LongLine(line[:SHOWN])

    def rest(self) -> bytes | None:
        """What followed the last newline when the stream ended, if anything."""
        rest, self._partial = bytes(self._partial), bytearray()
        return rest if rest and not self._discarding else None
