"""A small declarative schema for TOML tables, strict and with helpful errors.

A table is described by a dict of key -> `Field`; `check_table` converts the
raw values it can and reports every problem as `Problem(key, message)`,
never raising for bad input. Every message says what was expected and what
was found; an unknown key gets a "did you mean" when a close one exists.

Values merged in from the daemon file's ``[defaults]`` arrive wrapped in
`Inherited`: they are resolved against the daemon file's directory and their
problems are marked, so the loader can report them where they were written.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Invalid(ValueError):
    """A value does not fit its field; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class Inherited:
    """A value that came from the daemon file's `[defaults]`, not the job file."""

    value: Any


@dataclass(frozen=True, slots=True)
class Problem:
    """One schema error: the dotted key and what is wrong there."""

    key: str
    message: str
    inherited: bool = False
    """True when the value came from `[defaults]` (report it in the daemon file)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where relative paths are resolved from: the directory of each file."""

    job_dir: Path
    defaults_dir: Path


Convert = Callable[[Any, Path], Any]
"""(raw value, directory for relative paths) -> converted value, or raise Invalid."""


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a table. Optional keys are simply left out of the result; the
    dataclass the result builds supplies the default."""

    convert: Convert
    required: bool = False


_TOML_TYPES: dict[type, str] = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "a table",
    dt.datetime: "a date-time",
    dt.date: "a date",
    dt.time: "a time",
}


def describe(value: Any) -> str:
    """How a found value is shown in a message: its TOML type and a short repr."""
    kind = _TOML_TYPES.get(type(value), type(value).__name__)
    try:
        shown = repr(value)
    except ValueError:  # an integer beyond Python's limit of digits for str()
        return f"{kind} (too long to show)"
    return f"{kind} ({shown[:40]}{'...' if len(shown) > 40 else ''})"


# --- field kinds ---------------------------------------------------------------------


def boolean() -> Convert:
    def convert(value: Any, _: Path) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {describe(value)}")
        return value

    return convert


def integer(minimum: int | None = None) -> Convert:
    # TOML's true is a Python bool, an int subclass: not a count.
    def convert(value: Any, _: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {describe(value)}")
        if minimum is not None and value < minimum:
            raise Invalid(f"expected an integer of at least {minimum}, got {describe(value)}")
        return value

    return convert


def number(minimum: float) -> Convert:
    def convert(value: Any, _: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number, got {describe(value)}")
        as_float = _as_float(value)
        if not (math.isfinite(as_float) and as_float >= minimum):
            raise Invalid(
                f"expected a finite number of at least {minimum:g}, got {describe(value)}"
            )
        return as_float

    return convert


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_FORM = 'a duration like "5s", "250ms", "2m", "1h" or a number of seconds'


def parse_duration(value: object) -> float:
    """``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"`` or a number of seconds -> seconds.

    Raises `Invalid` (a `ValueError`) unless the result is finite and >= 0.
    """
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise Invalid(f"expected {_DURATION_FORM}, got {describe(value)}")
        seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _as_float(value)
    else:
        raise Invalid(f"expected {_DURATION_FORM}, got {describe(value)}")
    if not (math.isfinite(seconds) and seconds >= 0):
        raise Invalid(f"expected a finite duration of 0 or more seconds, got {describe(value)}")
    return seconds + 0.0  # -0.0 becomes 0.0


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # tomllib's integers are unbounded
        return math.inf


def duration(*, positive: bool = False) -> Convert:
    def convert(value: Any, _: Path) -> float:
        seconds = parse_duration(value)
        if positive and seconds == 0:
            raise Invalid(f"expected a duration of more than 0s, got {describe(value)}")
        return seconds

    return convert


def workers() -> Convert:
    """A number of processes (1 or more), or ``"auto"``: as many as the CPUs it may use."""

    def convert(value: Any, _: Path) -> int | str:
        if value == "auto" or (type(value) is int and value >= 1):
            return value  # type: ignore[no-any-return]
        raise Invalid(f'expected an integer of at least 1 or "auto", got {describe(value)}')

    return convert


def choice(*options: str) -> Convert:
    def convert(value: Any, _: Path) -> str:
        if not isinstance(value, str) or value not in options:
            listed = ", ".join(f'"{option}"' for option in options)
            raise Invalid(f"expected one of {listed}, got {describe(value)}")
        return value

    return convert


def text(pattern: re.Pattern[str], what: str) -> Convert:
    def convert(value: Any, _: Path) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise Invalid(f"expected {what}, got {describe(value)}")
        return value

    return convert


def path() -> Convert:
    def convert(value: Any, base: Path) -> Path:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise Invalid(f"expected a file path (a non-empty string), got {describe(value)}")
        found = Path(value)
        if value.startswith("~"):
            try:
                found = found.expanduser()
            except RuntimeError:  # "~user" for no such user, or no $HOME
                raise Invalid(f"expected a path whose ~ can be expanded, got {value!r}") from None
        # Lexically normalised, not resolved: a symlink in the path stays visible.
        return Path(os.path.normpath(base / found))

    return convert


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", re.ASCII)


def exception_names() -> Convert:
    def convert(value: Any, _: Path) -> tuple[str, ...]:
        expected = 'expected an array of exception names like ["TimeoutError", "mylib.Busy"]'
        if not isinstance(value, list):
            raise Invalid(f"{expected}, got {describe(value)}")
        for item in value:
            if not isinstance(item, str) or not _DOTTED_NAME.fullmatch(item):
                raise Invalid(f"{expected}, got an element {describe(item)}")
        return tuple(value)

    return convert


_OCTAL_MODE = re.compile(r"0?[0-7]{3}", re.ASCII)


def octal_mode() -> Convert:
    # A string, because a TOML integer 660 would silently be decimal.
    def convert(value: Any, _: Path) -> int:
        if not isinstance(value, str) or not _OCTAL_MODE.fullmatch(value):
            raise Invalid(f'expected an octal mode as a string like "0660", got {describe(value)}')
        return int(value, 8)

    return convert


# --- tables ------------------------------------------------------------------------------


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def show_key(key: str) -> str:
    """A key as it goes into a dotted path: bare when TOML allows, else quoted and
    escaped, so ``source."a.b"`` is not ``source.a.b`` and no key breaks the line."""
    return key if _BARE_KEY.fullmatch(key) else _quoted(key)


def _quoted(key: str) -> str:
    def escape(char: str) -> str:
        if char in '"\\':
            return "\\" + char
        if char.isprintable():
            return char
        return f"\\u{ord(char):04x}" if ord(char) < 0x10000 else f"\\U{ord(char):08x}"

    return '"' + "".join(escape(char) for char in key) + '"'


def unknown_key(key: str, known: Mapping[str, object] | set[str]) -> str:
    """The message for a key the table does not have, with the closest known one."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f"unknown key {_quoted(key)}{hint}"


def check_table(
    raw: Any,
    fields: Mapping[str, Field],
    prefix: str,
    origin: Origin,
    problems: list[Problem],
    *,
    extra: bool = False,
    partial: bool = False,
) -> dict[str, Any]:
    """Convert `raw` by `fields`; append every problem; return what converted.

    With `extra`, unknown keys (plugin options) are passed through unconverted.
    With `partial` (``[defaults]`` on their own), required keys may be missing.
    """
    out: dict[str, Any] = {}
    all_inherited = isinstance(raw, Inherited)
    table = raw.value if isinstance(raw, Inherited) else raw
    if not isinstance(table, dict):
        message = f"expected a table, got {describe(table)}"
        problems.append(Problem(prefix.rstrip("."), message, all_inherited))
        return out
    for key, wrapped in table.items():
        inherited = all_inherited or isinstance(wrapped, Inherited)
        value = unwrap(wrapped)
        field = fields.get(key)
        if field is None:
            if extra:
                out[key] = value
            else:
                where = prefix + show_key(key)
                problems.append(Problem(where, unknown_key(key, fields), inherited))
            continue
        try:
            out[key] = field.convert(value, origin.defaults_dir if inherited else origin.job_dir)
        except Invalid as exc:
            problems.append(Problem(prefix + show_key(key), str(exc), inherited))
    for key, field in fields.items():
        if field.required and key not in table and not partial:
            problems.append(Problem(prefix + key, "required key is missing"))
    return out


def unwrap(value: Any) -> Any:
    """The plain value, with every `Inherited` marker removed."""
    if isinstance(value, Inherited):
        return unwrap(value.value)
    if isinstance(value, dict):
        return {key: unwrap(item) for key, item in value.items()}
    if isinstance(value, list):
        return [unwrap(item) for item in value]
    return value
