"""The ``postgres`` sink: rows and the job's offset committed in one transaction.

Each `flush` is one transaction: the rows written since the last flush (``COPY`` in
insert mode, a pipelined ``INSERT ... ON CONFLICT DO UPDATE`` per row in upsert mode),
then the job's offset in the offsets table. A restart resumes from exactly the last
committed row: `open` returns the stored offset, which wins over the snapshot's.

A record is a JSON object (a dict): column ``c`` gets the value of its field, NULL
when the field is missing; an object or array value is sent as JSON (for a
``json``/``jsonb`` column). A record that is not an object, or that the table refuses
on its own (a constraint violation, a value of the wrong type), goes to the job's
``[records]`` policy through `reject_with`: the failed transaction is rolled back and
done again with the batch split in halves under savepoints until each refused row
stands alone; its neighbours are written, in the same one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from supervisor.connectors.postgres.config import PostgresSinkConfig
from supervisor.connectors.postgres.connect import (
    connect,
    is_record_error,
    regclass,
    server_name,
    table_identifier,
    translate,
)
from supervisor.errors import BrokerRefused
from supervisor.protocols import Offset, Record, Rejected, RejectRecords

if TYPE_CHECKING:
    from psycopg import AsyncConnection

ROLE = "sink"

Row = tuple[Any, ...]


class NotATable(TypeError):
    """A record that is not a JSON object has no fields to fill the columns from."""


class PostgresSink:
    """One row per record in `table`; the offset in `offsets_table`, in the same commit."""

    def __init__(self, config: PostgresSinkConfig, job: str) -> None:
        self._config = config
        self._job = job
        self._fields = tuple(record_field for _, record_field in config.columns)
        self._connection: AsyncConnection[Any] | None = None
        self._pending: list[Record] = []
        self._reject: RejectRecords | None = None
        self._write_sql = ""
        self._offset_sql = ""

    def reject_with(self, reject: RejectRecords) -> None:
        self._reject = reject

    async def open(self) -> Offset | None:
        import psycopg

        self._connection = await connect(self._config, ROLE)
        _send_json(self._connection)
        try:
            self._compose()
            await self._check_table()
            await self._ensure_offsets_table()
            return await self._stored_offset()
        except psycopg.Error as exc:
            raise translate(exc, self._config, ROLE) from None

    async def write(self, records: Sequence[Record]) -> None:
        self._pending.extend(records)

    async def flush(self, offset: Offset | None) -> None:
        import psycopg

        connection = self._connection
        if connection is None:
            raise RuntimeError("PostgresSink used before open()")
        records, self._pending = self._pending, []
        rows, kept, refused = self._rows(records)
        try:
            if refused:
                await self._commit_isolating(connection, rows, kept, refused, offset)
                return
            try:
                async with connection.transaction():
                    await self._write_rows(connection, rows)
                    await self._store_offset(connection, offset)
            except psycopg.Error as exc:
                if not is_record_error(exc):
                    raise
                # One record or more is refused: find them, and write the rest.
                await self._commit_isolating(connection, rows, kept, [], offset, failed=True)
        except psycopg.Error as exc:
            raise translate(exc, self._config, ROLE) from None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        self._pending = []
        if connection is not None:
            await connection.close()

    # -- rows -------------------------------------------------------------------------

    def _rows(self, records: list[Record]) -> tuple[list[Row], list[Record], list[Rejected]]:
        """The rows of the records that are objects, those records, and the others."""
        fields = self._fields
        if all(type(record) is dict for record in records):
            return [tuple(map(record.get, fields)) for record in records], records, []
        rows: list[Row] = []
        kept: list[Record] = []
        refused: list[Rejected] = []
        for record in records:
            if type(record) is dict:
                rows.append(tuple(map(record.get, fields)))
                kept.append(record)
            else:
                problem = NotATable(
                    f"a postgres sink takes records that are objects, got {type(record).__name__}"
                )
                refused.append(Rejected(record, problem))
        return rows, kept, refused

    async def _write_rows(self, connection: AsyncConnection[Any], rows: list[Row]) -> None:
        if not rows:
            return
        async with connection.cursor() as cursor:
            if self._config.mode == "insert":
                async with cursor.copy(self._write_sql) as copy:
                    for row in rows:
                        await copy.write_row(row)
            else:
                await cursor.executemany(self._write_sql, rows)

    async def _commit_isolating(
        self,
        connection: AsyncConnection[Any],
        rows: list[Row],
        kept: list[Record],
        refused: list[Rejected],
        offset: Offset | None,
        *,
        failed: bool = False,
    ) -> None:
        """One transaction again: each half of the rows under a savepoint, halving what
        fails until the rows the table refuses stand alone; those go to the records
        policy before the commit (which its error, under ``fail``, prevents). `failed`:
        the whole batch just failed, so it is split at once."""
        async with connection.transaction():
            if failed and len(rows) > 1:
                middle = len(rows) // 2
                await self._isolate(connection, rows, kept, 0, middle, refused)
                await self._isolate(connection, rows, kept, middle, len(rows), refused)
            else:
                await self._isolate(connection, rows, kept, 0, len(rows), refused)
            if refused:
                if self._reject is None:
                    raise refused[0].error
                await self._reject(refused)
            await self._store_offset(connection, offset)

    async def _isolate(
        self,
        connection: AsyncConnection[Any],
        rows: list[Row],
        kept: list[Record],
        start: int,
        end: int,
        refused: list[Rejected],
    ) -> None:
        import psycopg

        if start >= end:
            return
        try:
            async with connection.transaction():  # a savepoint
                await self._write_rows(connection, rows[start:end])
        except psycopg.Error as exc:
            if not is_record_error(exc):
                raise
            if end - start == 1:
                refused.append(Rejected(kept[start], exc))
                return
            middle = (start + end) // 2
            await self._isolate(connection, rows, kept, start, middle, refused)
            await self._isolate(connection, rows, kept, middle, end, refused)

    # -- the offset -------------------------------------------------------------------

    async def _store_offset(self, connection: AsyncConnection[Any], offset: Offset | None) -> None:
        if offset is None:
            return
        from psycopg.types.json import Jsonb

        await connection.execute(self._offset_sql, (self._job, Jsonb(offset)))

    async def _stored_offset(self) -> Offset | None:
        from psycopg import sql

        assert self._connection is not None
        cursor = await self._connection.execute(
            sql.SQL("SELECT job_offset FROM {} WHERE job = %s").format(
                table_identifier(self._config.offsets_table)
            ),
            (self._job,),
        )
        row = await cursor.fetchone()
        if row is None or row[0] is None:
            return None
        offset: Offset = row[0]
        return offset

    # -- setting up -------------------------------------------------------------------

    def _compose(self) -> None:
        from psycopg import sql

        assert self._connection is not None
        config = self._config
        table = table_identifier(config.table)
        columns = sql.SQL(", ").join(sql.Identifier(column) for column, _ in config.columns)
        if config.mode == "insert":
            write = sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)
        else:
            write = sql.SQL(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}"
            ).format(
                table,
                columns,
                sql.SQL(", ").join(sql.Placeholder() for _ in config.columns),
                sql.SQL(", ").join(sql.Identifier(column) for column in config.key),
                _updates(config),
            )
        self._write_sql = write.as_string(self._connection)
        self._offset_sql = (
            sql.SQL(
                "INSERT INTO {} (job, job_offset) VALUES (%s, %s) ON CONFLICT (job) DO UPDATE "
                "SET job_offset = EXCLUDED.job_offset, updated_at = now()"
            )
            .format(table_identifier(config.offsets_table))
            .as_string(self._connection)
        )

    async def _check_table(self) -> None:
        """Refuse at open, naming the key, a table or column that is not there, a key
        without a unique index, or no right to insert: planning an INSERT of one row of
        NULLs (EXPLAIN, which runs nothing) checks all of these."""
        import psycopg
        from psycopg import sql

        assert self._connection is not None
        config = self._config
        server = server_name(config)
        table = table_identifier(config.table)
        columns = sql.SQL(", ").join(sql.Identifier(column) for column, _ in config.columns)
        nulls = sql.SQL(", ").join(sql.NULL for _ in config.columns)
        statement = sql.SQL("EXPLAIN INSERT INTO {} ({}) VALUES ({})").format(table, columns, nulls)
        if config.mode == "upsert":
            statement = sql.SQL("{} ON CONFLICT ({}) DO UPDATE SET {}").format(
                statement,
                sql.SQL(", ").join(sql.Identifier(column) for column in config.key),
                _updates(config),
            )
        try:
            await self._connection.execute(statement)
        except psycopg.errors.UndefinedTable:
            raise BrokerRefused(
                f"{ROLE}.table: no table {config.table} on {server} (create it first)"
            ) from None
        except psycopg.errors.UndefinedColumn as exc:
            raise BrokerRefused(f"{ROLE}.columns: {exc.diag.message_primary} on {server}") from None
        except psycopg.errors.InvalidColumnReference:
            raise BrokerRefused(
                f"{ROLE}.key: table {config.table} on {server} has no primary key or unique "
                f"index on ({', '.join(config.key)}), which upsert needs"
            ) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise BrokerRefused(f"{ROLE}.table: {exc.diag.message_primary} on {server}") from None

    async def _ensure_offsets_table(self) -> None:
        """Create the offsets table if it is not there (only then: creating needs a right
        on the schema that writing rows does not)."""
        from psycopg import sql

        assert self._connection is not None
        name = self._config.offsets_table
        cursor = await self._connection.execute("SELECT to_regclass(%s)", (regclass(name),))
        found = await cursor.fetchone()
        if found is not None and found[0] is not None:
            return
        await self._connection.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (job text PRIMARY KEY, job_offset jsonb NOT NULL, "
                "updated_at timestamptz NOT NULL DEFAULT now())"
            ).format(table_identifier(name))
        )


def _send_json(connection: AsyncConnection[Any]) -> None:
    """Send an object or an array value as JSON text, of no type: the column's type reads
    it (json, jsonb, or text)."""
    from psycopg.types.json import JsonDumper

    class UntypedJsonDumper(JsonDumper):
        oid = 0

    connection.adapters.register_dumper(dict, UntypedJsonDumper)
    connection.adapters.register_dumper(list, UntypedJsonDumper)


def _updates(config: PostgresSinkConfig) -> Any:
    from psycopg import sql

    return sql.SQL(", ").join(
        sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(column), sql.Identifier(column))
        for column, _ in config.columns
        if column not in config.key
    )
