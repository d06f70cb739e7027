"""How records become bytes in the line-oriented sinks."""

from __future__ import annotations

import json
from collections.abc import Sequence

from supervisor.protocols import Record

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def encode_lines(records: Sequence[Record]) -> bytes:
    """One compact JSON document per record, each ending in a newline."""
    if not records:
        return b""
    return ("\n".join(map(_encode, records)) + "\n").encode()
