"""A small declarative schema for TOML tables, strict and with helpful errors.

A table is described by a dict of key -> `Field`; `check_table` converts the
raw values it can and reports every problem as `Problem(key, message)`,
never raising for bad input. Every message says what was expected and what
was found; an unknown key gets a "did you mean" when a close one exists.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.plugins import REFERENCE_PATTERN


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


def describe(value: Any) -> str:
    """How a found value is shown in a message: its TOML type and a short repr."""
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} ({text[:40]}{'...' if len(text) > 40 else ''})"


# --- field kinds ---------------------------------------------------------------------


def boolean() -> Convert:
    def convert(value: Any, _: Path) -> bool:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {describe(value)}")
        return value

    return convert


def integer(minimum: int | None = None, maximum: int | None = None) -> Convert:
    def convert(value: Any, _: Path) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected an integer, got {describe(value)}")
        _check_range(value, minimum, maximum)
        return value

    return convert


def number(minimum: float | None = None, *, above: float | None = None) -> Convert:
    def convert(value: Any, _: Path) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Invalid(f"expected a number, got {describe(value)}")
        if not math.isfinite(value):
            raise Invalid(f"expected a finite number, got {value}")
        _check_range(value, minimum, None, above=above)
        return float(value)

    return convert


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)", re.ASCII)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"`` or a number of seconds -> seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Invalid(
            f'expected a duration like "5s", "250ms" or a number of seconds, got {describe(value)}'
        )
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match is None:
            raise Invalid(f'expected a duration like "5s", "250ms", "2m" or "1h", got {value!r}')
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise Invalid(f"expected a duration of 0 or more seconds, got {value!r}")
    return seconds


def duration(*, above: float | None = None, minimum: float | None = None) -> Convert:
    def convert(value: Any, _: Path) -> float:
        seconds = parse_duration(value)
        _check_range(seconds, minimum, None, above=above, unit="s")
        return seconds

    return convert


def choice(*options: str) -> Convert:
    def convert(value: Any, _: Path) -> str:
        if not isinstance(value, str) or value not in options:
            listed = ", ".join(f'"{option}"' for option in options)
            raise Invalid(f"expected one of {listed}, got {describe(value)}")
        return value

    return convert


def text(pattern: re.Pattern[str] | None = None, what: str = "a string") -> Convert:
    def convert(value: Any, _: Path) -> str:
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise Invalid(f"expected {what}, got {describe(value)}")
        return value

    return convert


def path() -> Convert:
    def convert(value: Any, base: Path) -> Path:
        if not isinstance(value, str) or not value or "\x00" in value:
            raise Invalid(f"expected a file path (a non-empty string), got {describe(value)}")
        resolved = Path(value).expanduser()
        if not resolved.is_absolute():
            resolved = base / resolved
        # Lexically normalised, not resolved: a symlink in the path stays visible.
        return Path(os.path.normpath(resolved))

    return convert


_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", re.ASCII)


def exception_names() -> Convert:
    def convert(value: Any, _: Path) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(
            isinstance(item, str) and _DOTTED_NAME.fullmatch(item) for item in value
        ):
            raise Invalid(
                'expected an array of exception names like ["TimeoutError", '
                f'"mylib.errors.Busy"], got {describe(value)}'
            )
        return tuple(value)

    return convert


def reference() -> Convert:
    return text(REFERENCE_PATTERN, 'a reference like "package.module:Name"')


def octal_mode() -> Convert:
    def convert(value: Any, _: Path) -> int:
        if not isinstance(value, str) or not re.fullmatch(r"0?[0-7]{3}", value, re.ASCII):
            raise Invalid(f'expected an octal mode as a string like "0660", got {describe(value)}')
        return int(value, 8)

    return convert


def _check_range(
    value: float,
    minimum: float | None,
    maximum: float | None,
    *,
    above: float | None = None,
    unit: str = "",
) -> None:
    shown = f"{value:g}{unit}" if isinstance(value, float) else f"{value}{unit}"
    if above is not None and not value > above:
        raise Invalid(f"expected more than {above:g}{unit}, got {shown}")
    if minimum is not None and value < minimum:
        raise Invalid(f"expected at least {minimum:g}{unit}, got {shown}")
    if maximum is not None and value > maximum:
        raise Invalid(f"expected at most {maximum:g}{unit}, got {shown}")


# --- tables ------------------------------------------------------------------------------


def unknown_key(key: str, known: Mapping[str, object] | set[str]) -> str:
    """The message for a key the table does not have, with the closest known one."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    return f'unknown key "{key}"{hint}'


def check_table(
    raw: Any,
    fields: Mapping[str, Field],
    prefix: str,
    origin: Origin,
    problems: list[Problem],
    *,
    extra: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Convert `raw` by `fields`; append every problem; return what converted.

    Keys accepted by `extra` (plugin options) are passed through unconverted.
    A value wrapped in `Inherited` is resolved against the daemon file's directory.
    """
    out: dict[str, Any] = {}
    if not isinstance(raw, dict):
        problems.append(Problem(prefix.rstrip("."), f"expected a table, got {describe(raw)}"))
        return out
    for key, wrapped in raw.items():
        inherited = isinstance(wrapped, Inherited)
        value = wrapped.value if inherited else wrapped
        dotted = f"{prefix}{key}"
        field = fields.get(key)
        if field is None:
            if extra is not None and extra(key):
                out[key] = unwrap(value)
            else:
                problems.append(Problem(dotted, unknown_key(key, fields), inherited))
            continue
        base = origin.defaults_dir if inherited else origin.job_dir
        try:
            out[key] = field.convert(value, base)
        except Invalid as exc:
            problems.append(Problem(dotted, str(exc), inherited))
    for key, field in fields.items():
        if field.required and key not in raw:
            problems.append(Problem(f"{prefix}{key}", "required key is missing"))
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
