"""The ``jsonl`` connector: append one JSON document per line to a file; flush is fsync.

This module declares it; the sink itself (`supervisor.connectors.jsonl.sink`) is
imported only to run a job, so `supervisor check` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, SinkRole
from supervisor.connectors.jsonl.config import JsonlSinkConfig

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import Sink


def _build(config: JsonlSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.jsonl.sink import JsonlSink

    return JsonlSink(config, codec=codec_for(job.codec))


CONNECTOR = Connector(
    type="jsonl",
    doc="One JSON document per line, appended to a file; flush is fsync.",
    sink=SinkRole(config=JsonlSinkConfig, build=_build),
)

__all__ = ["CONNECTOR", "JsonlSinkConfig"]
