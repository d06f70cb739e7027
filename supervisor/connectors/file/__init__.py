"""The ``file`` connector: the lines of a local file, followed across rotation.

This module declares it; the source itself (`supervisor.connectors.file.source`)
is imported only to run a job, so `supervisor check` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, SourceRole
from supervisor.connectors.file.config import FileSourceConfig, LineFormat, StartAt

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import Offset, Source


def _build(config: FileSourceConfig, job: JobConfig) -> Source:
    from supervisor.connectors.file.source import FileSource

    return FileSource(config, codec=codec_for(job.codec))


def _check_offset(config: FileSourceConfig, offset: Offset) -> None:
    from supervisor.connectors.file.source import FileSource

    FileSource.check_offset(offset)


CONNECTOR = Connector(
    type="file",
    doc="Lines (or JSON documents, one a line) of a local file, optionally followed.",
    source=SourceRole(config=FileSourceConfig, build=_build, check_offset=_check_offset),
)

__all__ = ["CONNECTOR", "FileSourceConfig", "LineFormat", "StartAt"]
