"""A snapshot file's TOML, read and written quickly in the layout tomli-w writes.

A restart decodes every job's snapshot before any job starts, and every
checkpoint encodes one. Our files have one shape: ``key = value`` lines of
integers, strings, booleans and UTC datetimes, then tables of those (``[offset]`` for a
file position, ``[failure]``).

- `parse` reads that shape with one regex per line (faster than tomli: see
  bench/README.md) and hands anything else (a float
  or list in an offset, a ``\\u`` escape, a comment, a hand-edited file,
  damage) to tomli whole. It accepts only text tomli accepts, and returns
  what tomli would.
- `dumps` writes that shape byte for byte as tomli-w does, escaping text with
  one `str.translate` where tomli-w walks it a character at a time in Python
  (slow for a failure's traceback), and hands anything else to tomli-w.

tests/unit/test_snapshot_toml.py checks both properties against tomli and tomli-w:
an unexpected shape costs a fallback, never a different answer or file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import tomli
import tomli_w

_KEY = r"(?P<key>[A-Za-z0-9_-]+)"
# An integer tomli-w writes: decimal, no sign but minus, no leading zero, at most 19 digits.
_INTEGER = r"(?P<integer>-?(?:0|[1-9][0-9]{0,18}))"
# A basic string: no control character but tab, only the short escapes.
_CHARACTERS = r'[^"\\\x00-\x08\x0a-\x1f\x7f]*'
_STRING = rf'"(?P<string>{_CHARACTERS}(?:\\[btnfr"\\]{_CHARACTERS})*)"'
_DATETIME = (
    r"(?P<datetime>([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{6}))?\+00:00)"
)
# Last, so the datetime's numbered groups keep their numbers.
_BOOLEAN = r"(?P<boolean>true|false)"
_LINE = re.compile(f"{_KEY} = (?:{_INTEGER}|{_STRING}|{_DATETIME}|{_BOOLEAN})")
_ESCAPE = re.compile(r"\\(.)")
_ESCAPED = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}
_TABLE = re.compile(r"\[([A-Za-z0-9_-]+)\]")


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
            header = _TABLE.fullmatch(line)
            if header is None or header[1] in document:
                return None
            table = document[header[1]] = {}
            continue
        key = match["key"]
        if key in table:
            return None
        value = _value(match)
        if value is None:
            return None
        table[key] = value
    return document


def _value(match: re.Match[str]) -> bool | int | str | datetime | None:
    if (boolean := match["boolean"]) is not None:
        return boolean == "true"
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


# --- writing -------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# tomli-w's escapes: the short ones, and \uXXXX for any other control character but tab.
_ESCAPES = {code: f"\\u{code:04x}" for code in (*range(0x20), 0x7F) if code != 0x09}
_ESCAPES.update({0x08: "\\b", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"})


def dumps(document: Mapping[str, Any]) -> str:
    """`document` as `tomli_w.dumps` writes it, byte for byte; a list, a float or a table in
    a table goes to tomli-w itself."""
    return _dumps_layout(document) or tomli_w.dumps(document)


def _dumps_layout(document: Mapping[str, Any]) -> str | None:
    lines: list[str] = []
    tables: list[tuple[str, Mapping[str, Any]]] = []
    for key, value in document.items():
        if isinstance(value, dict):  # not Mapping: an ABC check per value cost more than the rest
            tables.append((key, value))
        elif not _add_line(lines, key, value):
            return None
    for name, table in tables:
        if lines:
            lines.append("\n")
        if not _BARE_KEY.fullmatch(name):
            return None
        lines.append(f"[{name}]\n")
        for key, value in table.items():
            if isinstance(value, dict) or not _add_line(lines, key, value):
                return None
    return "".join(lines)


def _add_line(lines: list[str], key: object, value: object) -> bool:
    """Append ``key = value``; False if either is not in the layout."""
    if isinstance(value, bool):
        literal = "true" if value else "false"
    elif isinstance(value, int | datetime):
        literal = str(value)
    elif isinstance(value, str):
        literal = f'"{value.translate(_ESCAPES)}"'
    else:
        return False
    if not (isinstance(key, str) and _BARE_KEY.fullmatch(key)):
        return False
    lines.append(f"{key} = {literal}\n")
    return True
