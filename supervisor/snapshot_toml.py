"""Parse a snapshot file's TOML, quickly for the layout tomli-w writes.

A restart decodes every job's snapshot before any job starts. Our files have
one shape: ``key = value`` lines of integers, plain strings and UTC datetimes,
and at most one ``[failure]`` table. `parse` reads that shape with one regex
per line, 16 µs a file against tomli's 25 µs (compiled; tomllib's 80 µs),
and hands anything else (a float or structured offset, a ``\\u`` escape, a
comment, a hand-edited file, damage) to tomli whole.

The fast path accepts only text tomli accepts, and returns what tomli would
(tests/test_snapshot_toml.py checks that property against tomli); an
unexpected shape costs a fallback, never a different answer.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import tomli

_KEY = r"(?P<key>[a-z_]+)"
# An integer tomli-w writes: decimal, no sign but minus, no leading zero, within int64 for sure.
_INTEGER = r"(?P<integer>-?(?:0|[1-9][0-9]{0,17}))"
# A basic string: no control character but tab, only the short escapes.
_CHARACTERS = r'[^"\\\x00-\x08\x0a-\x1f\x7f]*'
_STRING = rf'"(?P<string>{_CHARACTERS}(?:\\[btnfr"\\]{_CHARACTERS})*)"'
_DATETIME = (
    r"(?P<datetime>([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{6}))?\+00:00)"
)
_LINE = re.compile(f"{_KEY} = (?:{_INTEGER}|{_STRING}|{_DATETIME})")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPED = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_TABLES = frozenset({"failure"})


def parse(text: str) -> dict[str, Any]:
    """The document in `text`, as `tomli.loads` returns it (and raises)."""
    document = _parse_layout(text)
    return tomli.loads(text) if document is None else document


def _parse_layout(text: str) -> dict[str, Any] | None:
    """The document, if `text` is in the layout; None for tomli to read it instead."""
    document: dict[str, Any] = {}
    table = document
    for line in text.split("\n"):
        match = _LINE.fullmatch(line)
        if match is None:
            if not line:
                continue
            if line[0] == "[" and line[-1] == "]" and (name := line[1:-1]) in _TABLES:
                if name in document:
                    return None
                table = document[name] = {}
                continue
            return None
        key = match["key"]
        if key in table:
            return None
        value = _value(match)
        if value is None:
            return None
        table[key] = value
    return document


def _value(match: re.Match[str]) -> int | str | datetime | None:
    if (integer := match["integer"]) is not None:
        return int(integer)
    if (string := match["string"]) is not None:
        return _ESCAPE.sub(_unescape, string) if "\\" in string else string
    year, month, day, hour, minute, second, fraction = match.group(5, 6, 7, 8, 9, 10, 11)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            int(fraction or 0),
            tzinfo=UTC,
        )
    except ValueError:  # no such date or time: tomli words the error
        return None


def _unescape(match: re.Match[str]) -> str:
    return _ESCAPED[match[1]]
