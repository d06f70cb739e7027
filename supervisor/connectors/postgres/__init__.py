"""The ``postgres`` connector: rows and the job's offset committed in one transaction
(sink); a table's rows in commit order, never skipping one (source).

This module declares it; the sink (`supervisor.connectors.postgres.sink`), the source
(`supervisor.connectors.postgres.table_source`) and psycopg are imported only to run a
job, so `supervisor check` works without the ``[postgres]`` extra installed.

`CDC_CONNECTOR` declares ``postgres-cdc``, change data capture through a logical
replication slot (`supervisor.connectors.postgres.cdc_source`): a type of its own, as
its keys and offset share nothing with the table source's but the connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from supervisor.connectors import Connector, SinkRole, SourceRole
from supervisor.connectors.postgres.cdc_config import PostgresCdcSourceConfig, check_cdc_source
from supervisor.connectors.postgres.config import (
    PostgresSinkConfig,
    PostgresTableSourceConfig,
    check_sink,
    check_table_source,
)

if TYPE_CHECKING:
    from supervisor.config.model import CheckpointPolicy, JobConfig
    from supervisor.protocols import Offset, Sink, Source


def _build_sink(config: PostgresSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.postgres.sink import PostgresSink

    return PostgresSink(config, job.name)


def _check_sink(config: PostgresSinkConfig, _policy: CheckpointPolicy) -> Iterable[tuple[str, str]]:
    return check_sink(config)


def _build_source(config: PostgresTableSourceConfig, _job: JobConfig) -> Source:
    from supervisor.connectors.postgres.table_source import PostgresTableSource

    return PostgresTableSource(config)


def _check_source(
    config: PostgresTableSourceConfig, _policy: CheckpointPolicy
) -> Iterable[tuple[str, str]]:
    return check_table_source(config)


def _check_offset(_config: PostgresTableSourceConfig, offset: Offset) -> None:
    from supervisor.connectors.postgres.table_source import check_offset

    check_offset(offset)


CONNECTOR = Connector(
    type="postgres",
    doc="A PostgreSQL table: rows in commit order, none skipped (source); rows committed "
    "with the job's offset, exactly-once (sink).",
    source=SourceRole(
        config=PostgresTableSourceConfig,
        build=_build_source,
        check_offset=_check_offset,
        check_job=_check_source,
    ),
    sink=SinkRole(config=PostgresSinkConfig, build=_build_sink, check_job=_check_sink),
)


def _build_cdc(config: PostgresCdcSourceConfig, _job: JobConfig) -> Source:
    from supervisor.connectors.postgres.cdc_source import PostgresCdcSource

    return PostgresCdcSource(config)


def _check_cdc(
    config: PostgresCdcSourceConfig, _policy: CheckpointPolicy
) -> Iterable[tuple[str, str]]:
    return check_cdc_source(config)


def _check_cdc_offset(_config: PostgresCdcSourceConfig, offset: Offset) -> None:
    from supervisor.connectors.postgres.cdc_source import check_offset

    check_offset(offset)


CDC_CONNECTOR = Connector(
    type="postgres-cdc",
    doc="PostgreSQL change data capture: inserts, updates and deletes in commit order from "
    "a logical replication slot, moved only after each checkpoint.",
    source=SourceRole(
        config=PostgresCdcSourceConfig,
        build=_build_cdc,
        check_offset=_check_cdc_offset,
        check_job=_check_cdc,
    ),
)

__all__ = [
    "CDC_CONNECTOR",
    "CONNECTOR",
    "PostgresCdcSourceConfig",
    "PostgresSinkConfig",
    "PostgresTableSourceConfig",
]
