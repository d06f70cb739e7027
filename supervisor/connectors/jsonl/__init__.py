"""The ``jsonl`` connector: append one JSON document per line to a file; flush is fsync.

This module declares it; the sink itself (`supervisor.connectors.jsonl.sink`) is
imported only to run a job, so `supervisor check` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.connectors import Connector, SinkRole, kinds, setting

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import Sink


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonlSinkConfig:
    """``type = "jsonl"``: append one JSON document per line; flush is fsync."""

    path: Path = field(metadata=setting(kinds.path(), "The file to append to."))


def _build(config: JsonlSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.jsonl.sink import JsonlSink

    return JsonlSink(config)


CONNECTOR = Connector(
    type="jsonl",
    doc="One JSON document per line, appended to a file; flush is fsync.",
    sink=SinkRole(config=JsonlSinkConfig, build=_build),
)
