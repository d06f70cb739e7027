"""The ``postgres`` connector: rows and the job's offset committed in one transaction.

This module declares it; the sink itself (`supervisor.connectors.postgres.sink`) and
psycopg are imported only to run a job, so `supervisor check` works without the
``[postgres]`` extra installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from supervisor.connectors import Connector, SinkRole
from supervisor.connectors.postgres.config import PostgresSinkConfig, check_sink

if TYPE_CHECKING:
    from supervisor.config.model import CheckpointPolicy, JobConfig
    from supervisor.protocols import Sink


def _build_sink(config: PostgresSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.postgres.sink import PostgresSink

    return PostgresSink(config, job.name)


def _check_sink(config: PostgresSinkConfig, _policy: CheckpointPolicy) -> Iterable[tuple[str, str]]:
    return check_sink(config)


CONNECTOR = Connector(
    type="postgres",
    doc="Rows in a PostgreSQL table, committed with the job's offset: exactly-once.",
    sink=SinkRole(config=PostgresSinkConfig, build=_build_sink, check_job=_check_sink),
)

__all__ = ["CONNECTOR", "PostgresSinkConfig"]
