"""Records from chunks of a file: split with bytes methods, decoded a batch at a time.

Per-line Python work is limited to what a format needs (``json`` parsing);
splitting, decoding and stripping "\\r" run over whole chunks or batches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from supervisor.protocols import Record


class LineBuffer:
    """Lines read from one file and not yet returned, and the partial line after them."""

    def __init__(self, *, jsonl: bool) -> None:
        self._jsonl = jsonl
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

    def take(self, max_records: int) -> tuple[list[Record], int]:
        """Up to `max_records` records, and how many bytes of the file they came from.

        For jsonl, records stop before the first line that is not JSON; a
        `json.JSONDecodeError` is raised only when that line comes first, so a
        batch holds the good lines and the next `take` raises.
        """
        start, stop = self._next_line, min(self._next_line + max_records, len(self._lines))
        if start >= stop:
            return [], 0
        lines = self._lines[start:stop] if start or stop < len(self._lines) else self._lines
        texts = _decode_lines(lines)
        records, used = self._parse_jsonl(texts) if self._jsonl else (texts, len(texts))
        self._next_line = start + used
        if self._next_line == len(self._lines):
            consumed = self._line_bytes  # exact even for a finished file's unterminated line
            self._lines, self._next_line = [], 0
        else:
            consumed = sum(map(len, lines[:used])) + used
        self._line_bytes -= consumed
        return records, consumed

    def _parse_jsonl(self, texts: list[str]) -> tuple[list[Record], int]:
        records: list[Record] = []
        scan = self._scan_json
        for index, text in enumerate(texts):
            # The C scanner alone is about three times faster than json.loads when the
            # value fills the line; anything else gets json.loads and its exact errors.
            try:
                record, end = scan(text, 0)
            except (StopIteration, json.JSONDecodeError):
                end = -1
            if end != len(text):
                try:
                    record = json.loads(text)
                except json.JSONDecodeError:
                    if not text.strip():  # blank lines are skipped
                        continue
                    if index:  # return the good lines; the next take starts at the bad one
                        return records, index
                    raise
            records.append(record)
        return records, len(texts)


def _decode_lines(lines: list[bytes]) -> list[str]:
    """Decode lines in one go; a "\\r" before a line's "\\n" is not part of the line.

    Bytes that are not UTF-8 become U+FFFD: one bad byte must not stop a log.
    """
    text = b"\n".join(lines).decode("utf-8", "replace")
    texts = text.split("\n")
    if "\r" in text:
        texts = [t[:-1] if t.endswith("\r") else t for t in texts]
    return texts
