"""The ``jsonl`` sink's settings: the keys of its table, their kinds, defaults and docs.

Apart from the declaration so that the implementation can import them without
importing its package's `__init__` back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from supervisor.connectors import kinds, setting


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonlSinkConfig:
    """``type = "jsonl"``: append one JSON document per line; flush is fsync."""

    path: Path = field(metadata=setting(kinds.path(), "The file to append to."))
