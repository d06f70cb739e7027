"""Records from chunks of a file: split with bytes methods, decoded a batch at a time.

Per-line Python work is limited to what a format needs (``json`` parsing);
splitting, decoding and stripping "\\r" run over whole chunks or batches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, NamedTuple

from supervisor.codec import JSON, Codec
from supervisor.protocols import Record


class BadLine(NamedTuple):
    """A line that is not a record of the format."""

    at: int
    """Its first byte, counted from the start of the `take` that returned it."""
    text: str
    error: json.JSONDecodeError


class Taken(NamedTuple):
    """What one `LineBuffer.take` returns."""

    records: list[Record]
    bad: list[BadLine]
    consumed: int
    """Bytes of the file the records and bad lines came from, newlines included."""


class LineBuffer:
    """Lines read from one file and not yet returned, and the partial line after them."""

    def __init__(self, *, jsonl: bool, codec: Codec = JSON) -> None:
        self._jsonl = jsonl
        self._fast_decode = codec.line_decoder() if jsonl else None
        """msgspec's decoder, given each line's bytes; None: json on the decoded batch."""
        # One scanner per buffer: it keeps a memo while it runs. (Not in typeshed.)
        self._scan_json: Callable[[str, int], tuple[Any, int]]
        self._scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
        self._lines: list[bytes] = []
        """Complete lines, from `_next_line` on, without their "\\n"."""
        self._next_line = 0
        self._line_bytes = 0
        """How many bytes of the file the lines left came from."""
        self._partial: list[bytes] = []
        """The pieces of the last line read, whose newline has not arrived yet."""

    @property
    def has_lines(self) -> bool:
        return self._next_line < len(self._lines)

    @property
    def partial_bytes(self) -> int:
        return sum(map(len, self._partial))

    def add(self, data: bytes) -> None:
        """Split a chunk read just after the previous one; only when no lines are left."""
        lines = data.split(b"\n")
        partial = lines.pop()
        if not lines:
            self._partial.append(partial)
            return
        self._line_bytes = self.partial_bytes + len(data) - len(partial)
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
        self._lines, self._next_line = lines, 0
        self._partial = [partial] if partial else []

    def finish_line(self) -> None:
        """The file is finished, so its partial line is a line: the last one."""
        if self._partial:
            self._lines.append(b"".join(self._partial))
            self._line_bytes += len(self._lines[-1])
            self._partial = []

    def drop_partial(self) -> int:
        """Forget the partial line (it will be read again, or is lost); return its size."""
        dropped = self.partial_bytes
        self._partial = []
        return dropped

    def take(self, max_records: int) -> Taken:
        """Up to `max_records` lines as records, and how many bytes of the file they came from.

        For jsonl, a line that is not JSON is not a record: it is returned in
        `Taken.bad` with its error, for the job's records policy to judge.
        """
        start, stop = self._next_line, min(self._next_line + max_records, len(self._lines))
        if start >= stop:
            return Taken([], [], 0)
        lines = self._lines[start:stop] if start or stop < len(self._lines) else self._lines
        if self._fast_decode is not None:
            records, bad = _parse_jsonl_bytes(lines, self._fast_decode)
        else:
            texts = _decode_lines(lines)
            records, bad = self._parse_jsonl(texts, lines) if self._jsonl else (texts, [])
        self._next_line = stop
        if self._next_line == len(self._lines):
            consumed = self._line_bytes  # exact even for a finished file's unterminated line
            self._lines, self._next_line = [], 0
        else:
            consumed = sum(map(len, lines)) + len(lines)
        self._line_bytes -= consumed
        return Taken(records, bad, consumed)

    def _parse_jsonl(
        self, texts: list[str], lines: list[bytes]
    ) -> tuple[list[Record], list[BadLine]]:
        records: list[Record] = []
        bad: list[BadLine] = []
        scan = self._scan_json
        for index, text in enumerate(texts):
            # The C scanner alone is much cheaper than json.loads when the value fills
            # the line (bench/README.md); anything else gets json.loads and its exact errors.
            try:
                record, end = scan(text, 0)
            except (StopIteration, json.JSONDecodeError):
                end = -1
            if end != len(text):
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as exc:
                    if text.strip():  # blank lines are skipped
                        at = sum(map(len, lines[:index])) + index  # rare: computed only here
                        bad.append(BadLine(at, text, exc))
                    continue
            records.append(record)
        return records, bad


def _parse_jsonl_bytes(
    lines: list[bytes], decode: Callable[[bytes], Any]
) -> tuple[list[Record], list[BadLine]]:
    """`LineBuffer._parse_jsonl`'s result, from a decoder that takes each line's bytes.

    The decoder (`supervisor.codec`) gives json's value for every line it accepts, a
    trailing "\r" being whitespace to it as to json; any line it refuses (blank, not
    UTF-8, NaN, not JSON...) is decoded as the json path decodes it, errors included.
    """
    try:
        return list(map(decode, lines)), []  # the common batch: every line a record
    except (ValueError, RecursionError):
        pass  # some line is not: line by line, the batch's records kept in order
    records: list[Record] = []
    append = records.append
    bad: list[BadLine] = []
    at = 0  # the line's byte position in the batch (each line was followed by "\n")
    for line in lines:
        try:
            append(decode(line))
        except (ValueError, RecursionError):  # json decides: its value, or its error
            text = line.decode("utf-8", "replace")
            if text.endswith("\r"):
                text = text[:-1]
            try:
                append(json.loads(text))
            except json.JSONDecodeError as exc:
                if text.strip():  # blank lines are skipped
                    bad.append(BadLine(at, text, exc))
        at += len(line) + 1
    return records, bad


def _decode_lines(lines: list[bytes]) -> list[str]:
    """Decode lines in one go; a "\\r" before a line's "\\n" is not part of the line.

    Bytes that are not UTF-8 become U+FFFD: one bad byte must not stop a log.
    """
    text = b"\n".join(lines).decode("utf-8", "replace")
    texts = text.split("\n")
    if "\r" in text:
        texts = [t[:-1] if t.endswith("\r") else t for t in texts]
    return texts
