"""The ``sqlite`` sink's settings: the keys of its table, their kinds, defaults and docs.

Apart from the declaration so that the implementation can import them without
importing its package's `__init__` back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.connectors import kinds, setting


@dataclass(frozen=True, slots=True, kw_only=True)
class SqliteSinkConfig:
    """``type = "sqlite"``: rows and the job's offset committed in one transaction."""

    path: Path = field(metadata=setting(kinds.path(), "The database file."))
    table: str = field(
        default="records",
        metadata=setting(
            kinds.text(re.compile(r"[A-Za-z_]\w{0,62}", re.ASCII), "an SQL identifier"),
            "The table records go to, one row each.",
        ),
    )
