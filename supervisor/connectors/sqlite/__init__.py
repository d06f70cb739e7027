"""The ``sqlite`` connector: rows and the job's offset committed in one transaction.

This module declares it; the sink itself (`supervisor.connectors.sqlite.sink`)
is imported only to run a job, so `supervisor check` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, SinkRole
from supervisor.connectors.sqlite.config import SqliteSinkConfig

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import Sink


def _build(config: SqliteSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.sqlite.sink import SqliteSink

    return SqliteSink(config, job.name, codec=codec_for(job.codec))


CONNECTOR = Connector(
    type="sqlite",
    doc="Rows in an SQLite table, committed with the job's offset: exactly-once.",
    sink=SinkRole(config=SqliteSinkConfig, build=_build),
)

__all__ = ["CONNECTOR", "SqliteSinkConfig"]
