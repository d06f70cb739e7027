"""The ``sqlite`` connector: rows and the job's offset committed in one transaction.

This module declares it; the sink itself (`supervisor.connectors.sqlite.sink`)
is imported only to run a job, so `supervisor check` stays light.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor.connectors import Connector, SinkRole, kinds, setting

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig
    from supervisor.protocols import Sink


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


def _build(config: SqliteSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.sqlite.sink import SqliteSink

    return SqliteSink(config, job.name)


CONNECTOR = Connector(
    type="sqlite",
    doc="Rows in an SQLite table, committed with the job's offset: exactly-once.",
    sink=SinkRole(config=SqliteSinkConfig, build=_build),
)
