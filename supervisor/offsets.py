"""The rule for an offset: what a snapshot can store and read back exactly, and how long
an offset an operator sets may be."""

from __future__ import annotations

import json
import math
import reprlib

_INT64 = range(-(2**63), 2**63)

MAX_OFFSET_BYTES = 64 * 1024
"""Longest offset `offset --set` stores, as `status` sends it (JSON, non-ASCII escaped):
every `status` carries every job's offset, so one set once would be paid by each."""

OFFSET_DEPTH = 32
"""Arrays and tables nested in one offset, at the most: a file position needs two."""
_OFFSET_FORM = (
    "an offset is a finite number, a string, true or false, or an array or table of them "
    f"(nested at most {OFFSET_DEPTH} deep)"
)


def check_offset(value: object, *, max_bytes: int | None = None) -> None:
    """Return if `value` is an offset a snapshot stores and reads back exactly, else raise
    ValueError saying why: no null, NaN or infinity, integers within 64 bits, text without
    lone surrogates, table keys that are text, at most `OFFSET_DEPTH` arrays or tables deep.

    With `max_bytes`, also refuse an offset longer than that as JSON: `offset --set`
    passes `MAX_OFFSET_BYTES`; a source's own offsets (the encoder) and a file's (the
    decoder) have no such cap.

    The one rule for an offset, wherever it comes from: a plugin source (the encoder), an
    operator (`offset --set`) or a file (the decoder). Iterative, so no value, however
    deep, raises anything but ValueError.
    """
    pending: list[tuple[object, int]] = [(value, 0)]  # (value, arrays/tables around it)
    while pending:
        item, depth = pending.pop()
        # Exact types: a subclass (an IntEnum, say) may be written as something else.
        if type(item) is bool:
            continue
        if isinstance(item, str):
            _check_text(item, "offset text")
        elif type(item) is int:
            if item not in _INT64:
                shown = item if item.bit_length() <= 128 else f"of {item.bit_length()} bits"
                raise ValueError(f"offset integer {shown} is outside TOML's 64-bit range")
        elif type(item) is float:
            if not math.isfinite(item):
                raise ValueError(f"offset number {item} is not finite; {_OFFSET_FORM}")
        elif isinstance(item, list | dict):
            if depth >= OFFSET_DEPTH:
                raise ValueError(f"offset nested more than {OFFSET_DEPTH} deep; {_OFFSET_FORM}")
            if isinstance(item, list):
                pending.extend((child, depth + 1) for child in item)
                continue
            for key, child in item.items():
                if not isinstance(key, str):
                    message = f"offset key {_shown(key)} is not text; {_OFFSET_FORM}"
                    raise ValueError(message)  # noqa: TRY004 - one error type for every wrong offset
                _check_text(key, "offset key")
                pending.append((child, depth + 1))
        else:
            kind = "null" if item is None else f"a {type(item).__name__}"
            message = f"the offset holds {kind}, which is not an offset value; {_OFFSET_FORM}"
            raise ValueError(message)
    if max_bytes is not None:
        size = len(json.dumps(value))  # checked above: nothing here can fail to encode
        if size > max_bytes:
            raise ValueError(
                f"it is {size:,} bytes as JSON, over the {max_bytes // 1024} KiB limit "
                "for an offset"
            )


def _check_text(text: str, what: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: JSON's "\ud800", or os.fsdecode of a byte
        raise ValueError(f"{what} {_shown(text)} is not valid Unicode") from None


def _shown(value: object) -> str:
    # reprlib: short, and shallow (a plugin's key may be a tuple nested 1,000 deep).
    return reprlib.repr(value)
