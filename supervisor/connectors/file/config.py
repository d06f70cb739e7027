"""The ``file`` source's settings: the keys of its table, their kinds, defaults and docs.

Apart from the declaration so that the implementation can import them without
importing its package's `__init__` back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias, get_args

from supervisor.connectors import kinds, setting

LineFormat: TypeAlias = Literal["lines", "jsonl"]
StartAt: TypeAlias = Literal["beginning", "end"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FileSourceConfig:
    """``type = "file"``: lines of a local file, optionally followed as it grows."""

    path: Path = field(metadata=setting(kinds.path(), "The file to read."))
    format: LineFormat = field(
        default="lines",
        metadata=setting(
            kinds.choice(*get_args(LineFormat)),
            '"lines": each line is a string; "jsonl": each line is parsed as JSON.',
        ),
    )
    follow: bool = field(
        default=True,
        metadata=setting(
            kinds.boolean(),
            "Keep reading as the file grows, across rotation; false: end at its end.",
        ),
    )
    start: StartAt = field(
        default="beginning",
        metadata=setting(
            kinds.choice(*get_args(StartAt)), "Where a job without a snapshot starts reading."
        ),
    )
    poll_interval: float = field(
        default=0.25,
        metadata=setting(
            kinds.duration(positive=True),
            "How often a followed file is checked for growth and rotation.",
        ),
    )
    follow_symlinks: bool = field(
        default=False,
        metadata=setting(
            kinds.boolean(),
            "Read through a symlink at `path` (one level) if the link and its target have "
            "one owner.",
        ),
    )
