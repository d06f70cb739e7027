"""The ``postgres`` table source: a table's rows in commit order, never skipping one.

A cursor on ``id`` alone skips rows: ids are handed out when a row is inserted, but
rows become visible when their transaction commits, so a reader that has seen id 11
(committed first) never looks back for id 10 (committed a moment later). This source
orders rows by ``(xid, id)`` instead, where ``xid`` is a column of type xid8 that the
table fills with ``DEFAULT pg_current_xact_id()`` (the writing transaction's id), and
reads only the rows whose transaction is older than the oldest one still running,
``pg_snapshot_xmin(pg_current_snapshot())``: such a transaction has ended, so no row
with that xid can appear later, and every row of a committed one is visible to the
same statement. Rows of running transactions (and of younger ones that committed
while an older one still runs) are held back until it ends: delivery waits, nothing
is skipped.

The offset is ``[xid, id]`` of the last row delivered; reopening there yields the
same rows in the same order (replayable). With a `notify_channel` it LISTENs and
reads at once when a trigger sends NOTIFY; it polls every `poll_interval` either way
(a transaction that holds the others back may send nothing when it ends).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio

from supervisor.connectors.postgres.config import PostgresTableSourceConfig
from supervisor.connectors.postgres.connect import (
    connect,
    regclass,
    server_name,
    table_identifier,
    translate,
)
from supervisor.errors import BrokerRefused
from supervisor.protocols import Batch, Offset

if TYPE_CHECKING:
    from psycopg import AsyncConnection

ROLE = "source"


def check_offset(offset: Offset) -> None:
    """ValueError unless `offset` is ``[xid, id]``: xid an integer >= 0, id an integer or
    a string (the id column's value, as text for types other than integers)."""
    if (
        not isinstance(offset, list)
        or len(offset) != 2
        or not isinstance(offset[0], int)
        or isinstance(offset[0], bool)
        or offset[0] < 0
        or isinstance(offset[1], bool)
        or not isinstance(offset[1], int | str)
    ):
        raise ValueError(
            "postgres source offset must be [xid, id]: the xid8 (an integer >= 0) and the id "
            f"(an integer or a string) of the last row read, got {offset!r}"
        )


class PostgresTableSource:
    """Rows of `table` ordered by ``(xid_column, id_column)``, read only once their
    transaction and every older one has ended."""

    replayable = True

    def __init__(self, config: PostgresTableSourceConfig) -> None:
        self._config = config
        self._connection: AsyncConnection[Any] | None = None
        self._cursor: list[Any] | None = None
        """``[xid, id]`` of the last row read; None before the first row."""
        self._position: Offset | None = None
        self._read_after = ""
        self._read_first = ""
        self._lag: int | None = None
        self._lag_at = 0.0
        self._lag_capped = False
        """The last count stopped at lag_limit: there are more."""
        self._held_back = False

    check_offset = staticmethod(check_offset)

    async def open(self, offset: Offset | None) -> None:
        import psycopg

        if offset is not None:
            check_offset(offset)
        self._compose()
        self._connection = await connect(self._config, ROLE)
        try:
            await self._check_table()
            if offset is not None:
                self._cursor = list(offset)  # type: ignore[arg-type]
            elif self._config.start == "end":
                self._cursor = await self._last_safe_row()
                self._position = self._cursor
            if self._config.notify_channel is not None:
                from psycopg import sql

                await self._connection.execute(
                    sql.SQL("LISTEN {}").format(sql.Identifier(self._config.notify_channel))
                )
        except psycopg.Error as exc:
            raise translate(exc, self._config, ROLE) from None

    def position(self) -> Offset | None:
        """With ``start = "end"``: the last row committed when the job first opened."""
        return self._position

    async def read(self, max_records: int, wait: float) -> Batch:
        import psycopg

        connection = self._connection
        if connection is None:
            raise RuntimeError("PostgresTableSource used before open()")
        deadline = anyio.current_time() + wait
        try:
            while True:
                rows = await self._fetch(connection, max_records)
                now = anyio.current_time()
                if rows or now >= deadline:
                    break
                await self._wait(connection, min(deadline - now, self._config.poll_interval))
            if rows:
                last = rows[-1]
                self._cursor = [int(last[0]), _key(last[1])]
                if self._lag is not None:
                    self._lag = max(self._lag - len(rows), 0)
            if time.monotonic() >= self._lag_at:
                await self._count_lag(connection)
        except psycopg.Error as exc:
            raise translate(exc, self._config, ROLE) from None
        return Batch([row[2] for row in rows], self._offset())

    def progress(self) -> Mapping[str, object] | None:
        view: dict[str, object] = {"position": self._offset()}
        if self._lag is not None:
            view["lag"] = self._lag
            if self._lag_capped:
                view["lag_at_least"] = True
        if self._held_back:
            view["held_back"] = (
                "rows are waiting for an older transaction to end (see pg_stat_activity)"
            )
        return view

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    # -- statements -------------------------------------------------------------------

    def _offset(self) -> Offset | None:
        return list(self._cursor) if self._cursor is not None else None

    async def _fetch(self, connection: AsyncConnection[Any], limit: int) -> list[Any]:
        if self._cursor is None:
            cursor = await connection.execute(self._read_first, (limit,))
        else:
            xid, key = self._cursor
            cursor = await connection.execute(self._read_after, (str(xid), key, limit))
        return await cursor.fetchall()

    async def _wait(self, connection: AsyncConnection[Any], seconds: float) -> None:
        """Until a notification (with a channel) or `seconds` have passed."""
        if self._config.notify_channel is None:
            await anyio.sleep(seconds)
            return
        async with aclosing(connection.notifies(timeout=seconds, stop_after=1)) as notes:
            async for _ in notes:
                pass

    async def _count_lag(self, connection: AsyncConnection[Any]) -> None:
        """Rows after the cursor (up to lag_limit), and whether some are held back."""
        from psycopg import sql

        config = self._config
        table = table_identifier(config.table)
        xid, key = sql.Identifier(config.xid_column), sql.Identifier(config.id_column)
        after: sql.Composable = sql.SQL("true")
        params: list[Any] = []
        if self._cursor is not None:
            after = sql.SQL("({}, {}) > (%s::text::xid8, %s)").format(xid, key)
            params = [str(self._cursor[0]), self._cursor[1]]
        statement = sql.SQL(
            "SELECT count(*), count(*) FILTER (WHERE NOT safe) FROM ("
            "SELECT {xid} < pg_snapshot_xmin(pg_current_snapshot()) AS safe FROM {table} "
            "WHERE {after} ORDER BY {xid}, {key} LIMIT {limit}) AS r"
        ).format(xid=xid, key=key, table=table, after=after, limit=sql.Literal(config.lag_limit))
        cursor = await connection.execute(statement, params)
        found = await cursor.fetchone()
        if found is not None:
            self._lag, held = int(found[0]), int(found[1])
            self._lag_capped = self._lag >= config.lag_limit
            self._held_back = held > 0 and held == self._lag
        self._lag_at = time.monotonic() + config.lag_interval

    def _compose(self) -> None:
        from psycopg import sql

        config = self._config
        table = table_identifier(config.table)
        xid, key = sql.Identifier(config.xid_column), sql.Identifier(config.id_column)
        record: sql.Composable
        if config.columns:
            record = sql.SQL("json_build_object({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}, t.{}").format(sql.Literal(column), sql.Identifier(column))
                    for column in config.columns
                )
            )
        else:
            record = sql.SQL("row_to_json(t)")
        head = sql.SQL(
            "SELECT t.{xid}::text, t.{key}, {record} FROM {table} AS t "
            "WHERE t.{xid} < pg_snapshot_xmin(pg_current_snapshot())"
        ).format(xid=xid, key=key, record=record, table=table)
        tail = sql.SQL(" ORDER BY t.{}, t.{} LIMIT %s").format(xid, key)
        after = sql.SQL(" AND (t.{}, t.{}) > (%s::text::xid8, %s)").format(xid, key)
        self._read_first = sql.Composed([head, tail]).as_string(None)
        self._read_after = sql.Composed([head, after, tail]).as_string(None)

    async def _last_safe_row(self) -> list[Any] | None:
        from psycopg import sql

        assert self._connection is not None
        config = self._config
        xid, key = sql.Identifier(config.xid_column), sql.Identifier(config.id_column)
        statement = sql.SQL(
            "SELECT {xid}::text, {key} FROM {table} "
            "WHERE {xid} < pg_snapshot_xmin(pg_current_snapshot()) "
            "ORDER BY {xid} DESC, {key} DESC LIMIT 1"
        ).format(xid=xid, key=key, table=table_identifier(config.table))
        cursor = await self._connection.execute(statement)
        found = await cursor.fetchone()
        return None if found is None else [int(found[0]), _key(found[1])]

    async def _check_table(self) -> None:
        """Refuse at open, naming the key: no such table, no such column, an xid column
        that is not xid8."""
        assert self._connection is not None
        config = self._config
        server = server_name(config)
        cursor = await self._connection.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            (regclass(config.table),),
        )
        types = dict(await cursor.fetchall())
        if not types:
            cursor = await self._connection.execute(
                "SELECT to_regclass(%s)", (regclass(config.table),)
            )
            found = await cursor.fetchone()
            if found is None or found[0] is None:
                raise BrokerRefused(f"{ROLE}.table: no table {config.table} on {server}")
        xid_type = types.get(config.xid_column)
        if xid_type != "xid8":
            problem = "has no column" if xid_type is None else f"has {xid_type}, not xid8, in"
            raise BrokerRefused(
                f"{ROLE}.xid_column: table {config.table} on {server} {problem} "
                f"{config.xid_column}: add it with ALTER TABLE {config.table} ADD COLUMN "
                f"{config.xid_column} xid8 NOT NULL DEFAULT pg_current_xact_id() "
                "(see docs/postgres.md)"
            )
        if config.id_column not in types:
            raise BrokerRefused(
                f"{ROLE}.id_column: table {config.table} on {server} has no column "
                f"{config.id_column}"
            )
        missing = [column for column in config.columns if column not in types]
        if missing:
            raise BrokerRefused(
                f"{ROLE}.columns: table {config.table} on {server} has no column "
                f"{', '.join(missing)}"
            )


def _key(value: Any) -> int | str:
    """The id column's value as an offset holds it: an integer as is, the rest as text."""
    return value if isinstance(value, int) and not isinstance(value, bool) else str(value)
