"""The ``file`` connector: the lines of a local file, followed across rotation.

This module declares it; the source itself (`supervisor.connectors.file.source`)
is imported only to run a job, so `supervisor check` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias, get_args

from supervisor.connectors import Connector, SourceRole, kinds, setting

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import Offset, Source

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


def _build(config: FileSourceConfig, job: JobConfig) -> Source:
    from supervisor.connectors.file.source import FileSource

    return FileSource(config)


def _check_offset(config: FileSourceConfig, offset: Offset) -> None:
    from supervisor.connectors.file.source import FileSource

    FileSource.check_offset(offset)


CONNECTOR = Connector(
    type="file",
    doc="Lines (or JSON documents, one a line) of a local file, optionally followed.",
    source=SourceRole(config=FileSourceConfig, build=_build, check_offset=_check_offset),
)
