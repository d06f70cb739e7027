"""The ``postgres-cdc`` source's keys: a replication slot read with pgoutput.

A type of its own rather than a ``mode`` of the ``postgres`` source: its keys
(slot, publication, heartbeat) share nothing with the table source's but the
connection, its offset is another shape (an LSN, not a row), and `supervisor check`
can then refuse a key that does not belong instead of ignoring it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from supervisor.connectors import kinds, setting
from supervisor.connectors.postgres.config import PostgresConnectionConfig, check_connection

SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}", re.ASCII)
"""PostgreSQL's rule for replication slot names."""
PUBLICATION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}", re.ASCII)


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresCdcSourceConfig(PostgresConnectionConfig):
    """``type = "postgres-cdc"``: every insert, update and delete of the published tables,
    in commit order, from a logical replication slot that moves only after a checkpoint."""

    slot: str = field(
        metadata=setting(
            kinds.text(SLOT_NAME, "a slot name (lower case letters, digits and _)"),
            "The logical replication slot (plugin pgoutput) this job reads and advances; "
            "one job per slot.",
        )
    )
    publication: str = field(
        metadata=setting(
            kinds.text(PUBLICATION_NAME, "a publication name"),
            "The publication naming the tables captured (CREATE PUBLICATION ... FOR TABLE "
            "...); it must exist.",
        )
    )
    create_slot: bool = field(
        default=True,
        metadata=setting(
            kinds.boolean(),
            "Create the slot at the first start if it is missing (capture begins then). "
            "A job that has an offset never re-creates it: the changes since are lost.",
        ),
    )
    peek_changes: int = field(
        default=20_000,
        metadata=setting(
            kinds.integer(1),
            "Messages decoded per peek (whole transactions, so a peek may return more); "
            "kept in memory until read.",
        ),
    )
    poll_interval: float = field(
        default=1.0,
        metadata=setting(
            kinds.duration(positive=True), "How often the slot is peeked when it had nothing."
        ),
    )
    heartbeat_interval: float = field(
        default=10.0,
        metadata=setting(
            kinds.duration(positive=True),
            "An idle slot emits a transactional message this often, so its position (and "
            "the WAL it holds on the server) moves on while nothing is captured.",
        ),
    )
    max_retained_wal: int = field(
        default=1 << 30,
        metadata=setting(
            kinds.integer(1),
            "Bytes of WAL the slot may hold on the server before `status` reports it as behind.",
        ),
    )
    lag_interval: float = field(
        default=5.0,
        metadata=setting(
            kinds.duration(positive=True),
            "How often the slot's retained WAL is measured for `status`.",
        ),
    )


def check_cdc_source(config: PostgresCdcSourceConfig) -> Iterable[tuple[str, str]]:
    yield from check_connection(config)
