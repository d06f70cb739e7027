"""The ``postgres-cdc`` source: change data capture through a logical replication slot.

Each read PEEKS the slot (`pg_logical_slot_peek_binary_changes` with pgoutput, which
leaves the slot where it is) and hands out the inserts, updates and deletes of the
publication's tables in commit order; only `commit(offset)`, called once the job's
snapshot holding `offset` is durable, moves the slot (`pg_replication_slot_advance`)
past the transactions delivered whole. A crash at any point leaves the slot at or
before the snapshot's offset: the next attempt peeks from there and skips what the
offset covers, so a change repeats only if the crash came between the snapshot and
its commit (within one checkpoint), and none is ever lost.

The offset is ``[lsn, n]``: the end LSN of the transaction being read (commit order is
end-LSN order) and how many of its changes were delivered; a transaction larger than a
batch is split across batches. An idle database still moves the slot: after
`heartbeat_interval` with nothing captured, the source emits a transactional
`pg_logical_emit_message`, whose commit the next peek returns.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import anyio

from supervisor.connectors.postgres.cdc_config import PostgresCdcSourceConfig
from supervisor.connectors.postgres.connect import connect, server_name, translate
from supervisor.connectors.postgres.pgoutput import (
    HEARTBEAT_PREFIX,
    DecodeError,
    Decoder,
    Transaction,
    lsn_text,
    lsn_value,
)
from supervisor.errors import BrokerRefused, BrokerUnavailable
from supervisor.protocols import Batch, Offset

if TYPE_CHECKING:
    from psycopg import AsyncConnection

ROLE = "source"


def check_offset(offset: Offset) -> None:
    """ValueError unless `offset` is ``["X/Y", n]``: an LSN and a count >= 0."""
    valid = isinstance(offset, list) and len(offset) == 2 and isinstance(offset[0], str)
    if valid:
        count = offset[1]  # type: ignore[index]
        valid = isinstance(count, int) and not isinstance(count, bool) and count >= 0
        try:
            lsn_value(offset[0])  # type: ignore[index,arg-type]
        except ValueError:
            valid = False
    if not valid:
        raise ValueError(
            'postgres-cdc offset must be ["LSN", n]: a transaction\'s end LSN such as '
            f'"0/16B3748" and how many of its changes were read, got {offset!r}'
        )


class PostgresCdcSource:
    """The changes of a publication's tables, from slot `slot`, moved on commit."""

    replayable = True

    def __init__(self, config: PostgresCdcSourceConfig) -> None:
        self._config = config
        self._connection: AsyncConnection[Any] | None = None
        self._decoder = Decoder()
        self._pending: deque[Transaction] = deque()
        self._lsn = 0
        """End LSN of the transaction read last (0: nothing read yet)."""
        self._index = 0
        """How many of its changes were delivered."""
        self._complete = 0
        """End LSN of the last transaction delivered whole: where the slot may move."""
        self._marks: dict[tuple[int, int], int] = {}
        """Offsets handed out -> the complete LSN at that point, for `commit`."""
        self._slot_at = 0
        self._heartbeat_at = 0.0
        self._lag_at = 0.0
        self._slot_view: dict[str, object] = {}

    check_offset = staticmethod(check_offset)

    async def open(self, offset: Offset | None) -> None:
        import psycopg

        if offset is not None:
            check_offset(offset)
            self._lsn = lsn_value(offset[0])  # type: ignore[index,arg-type]
            self._index = offset[1]  # type: ignore[index,assignment]
        self._connection = await connect(self._config, ROLE)
        try:
            await self._check_publication()
            await self._check_slot(offset)
        except psycopg.Error as exc:
            raise self._translate(exc) from None
        self._heartbeat_at = time.monotonic() + self._config.heartbeat_interval

    def position(self) -> Offset | None:
        return self._offset()

    async def read(self, max_records: int, wait: float) -> Batch:
        import psycopg

        connection = self._connection
        if connection is None:
            raise RuntimeError("PostgresCdcSource used before open()")
        deadline = anyio.current_time() + wait
        try:
            while not self._pending:
                await self._peek(connection)
                if self._pending:
                    break
                if time.monotonic() >= self._heartbeat_at:
                    await connection.execute(
                        "SELECT pg_logical_emit_message(true, %s, '')", (HEARTBEAT_PREFIX,)
                    )
                    self._heartbeat_at = time.monotonic() + self._config.heartbeat_interval
                    continue
                now = anyio.current_time()
                if now >= deadline:
                    break
                await anyio.sleep(min(deadline - now, self._config.poll_interval))
            if time.monotonic() >= self._lag_at:
                await self._measure_slot(connection)
        except psycopg.Error as exc:
            raise self._translate(exc) from None
        records = self._take(max_records)
        if records:
            self._heartbeat_at = time.monotonic() + self._config.heartbeat_interval
        offset = self._offset()
        if offset is not None:
            self._marks[(self._lsn, self._index)] = self._complete
        return Batch(records, offset)

    async def commit(self, offset: Offset) -> None:
        """The snapshot holding `offset` is durable: move the slot past every transaction
        it covers whole (never past a transaction only partly delivered)."""
        import psycopg

        check_offset(offset)
        lsn, index = cast("list[Any]", offset)
        mark = (lsn_value(lsn), int(index))
        target = self._marks.get(mark, 0)
        self._marks = {key: value for key, value in self._marks.items() if key > mark}
        if target <= self._slot_at or self._connection is None:
            return
        try:
            await self._connection.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
                (self._config.slot, lsn_text(target)),
            )
        except psycopg.Error as exc:
            raise self._translate(exc) from None
        self._slot_at = target

    def progress(self) -> Mapping[str, object] | None:
        return {"position": self._offset(), "slot": self._config.slot, **self._slot_view}

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    # -- reading ----------------------------------------------------------------------

    def _offset(self) -> Offset | None:
        return None if self._lsn == 0 else [lsn_text(self._lsn), self._index]

    async def _peek(self, connection: AsyncConnection[Any]) -> None:
        """Decode the slot from its confirmed position; keep the transactions not yet
        delivered (those after the cursor, or the rest of the one it is in)."""
        config = self._config
        cursor = await connection.execute(
            "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, %s, "
            "'proto_version', '1', 'publication_names', %s, 'messages', 'true')",
            (config.slot, config.peek_changes, '"' + config.publication + '"'),
        )
        rows = await cursor.fetchall()
        self._decoder = Decoder()  # a peek starts a decoding session: Relations come again
        try:
            for (data,) in rows:
                transaction = self._decoder.feed(bytes(data))
                if transaction is None:
                    continue
                if transaction.end_lsn == self._lsn and self._index < len(transaction.changes):
                    del transaction.changes[: self._index]  # the rest of a split transaction
                elif transaction.end_lsn <= self._lsn:
                    # Covered by the offset (delivered whole): the slot may move past it.
                    self._complete = max(self._complete, transaction.end_lsn)
                    continue
                self._pending.append(transaction)
        except DecodeError as exc:
            raise BrokerRefused(
                f"{ROLE}.slot: cannot decode slot {self._config.slot} on "
                f"{server_name(self._config)}: {exc}"
            ) from None

    def _take(self, limit: int) -> list[Any]:
        records: list[Any] = []
        while self._pending and len(records) < limit:
            transaction = self._pending[0]
            if transaction.end_lsn != self._lsn:
                self._lsn, self._index = transaction.end_lsn, 0
            taken = transaction.changes[: limit - len(records)]
            del transaction.changes[: len(taken)]
            records.extend(taken)
            self._index += len(taken)
            if not transaction.changes:
                self._pending.popleft()
                self._complete = transaction.end_lsn
        return records

    # -- the slot ---------------------------------------------------------------------

    async def _check_publication(self) -> None:
        assert self._connection is not None
        cursor = await self._connection.execute(
            "SELECT 1 FROM pg_publication WHERE pubname = %s", (self._config.publication,)
        )
        if await cursor.fetchone() is None:
            raise BrokerRefused(
                f"{ROLE}.publication: no publication {self._config.publication} on "
                f"{server_name(self._config)} (CREATE PUBLICATION "
                f"{self._config.publication} FOR TABLE ...)"
            )

    async def _check_slot(self, offset: Offset | None) -> None:
        assert self._connection is not None
        config = self._config
        server = server_name(config)
        query = (
            "SELECT plugin, database = current_database(), confirmed_flush_lsn::text, "
            "wal_status FROM pg_replication_slots WHERE slot_name = %s"
        )
        cursor = await self._connection.execute(query, (config.slot,))
        found = await cursor.fetchone()
        if found is None:
            if offset is not None:
                raise BrokerRefused(
                    f"{ROLE}.slot: no slot {config.slot} on {server}, but the job has read "
                    "from it: the changes since its last checkpoint are lost. To go on from "
                    f"now: SELECT pg_create_logical_replication_slot('{config.slot}', "
                    "'pgoutput'), then supervisor offset JOB --set '[\"LSN\", 0]' with its "
                    "confirmed_flush_lsn."
                )
            if not config.create_slot:
                raise BrokerRefused(
                    f"{ROLE}.slot: no slot {config.slot} on {server} (create it with "
                    f"pg_create_logical_replication_slot('{config.slot}', 'pgoutput'), "
                    "or set create_slot = true)"
                )
            await self._connection.execute(
                "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (config.slot,)
            )
            cursor = await self._connection.execute(query, (config.slot,))
            found = await cursor.fetchone()
            assert found is not None
        plugin, here, confirmed, wal_status = found
        if plugin != "pgoutput" or not here:
            where = f"plugin {plugin}" if plugin != "pgoutput" else "another database"
            raise BrokerRefused(
                f"{ROLE}.slot: slot {config.slot} on {server} is for {where}; this source "
                "needs a pgoutput slot of the database in the URL"
            )
        if wal_status == "lost":
            raise BrokerRefused(
                f"{ROLE}.slot: slot {config.slot} on {server} lost the WAL it needed "
                "(max_slot_wal_keep_size): changes are missing; drop and re-create it"
            )
        self._slot_at = self._complete = lsn_value(confirmed) if confirmed else 0
        if offset is not None and self._slot_at > self._lsn:
            raise BrokerRefused(
                f"{ROLE}.slot: slot {config.slot} on {server} is at {confirmed}, past the "
                f"job's offset {offset!r}: the changes in between cannot be read again"
            )

    async def _measure_slot(self, connection: AsyncConnection[Any]) -> None:
        cursor = await connection.execute(
            "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint, "
            "(pg_current_wal_lsn() - restart_lsn)::bigint, wal_status, confirmed_flush_lsn::text "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (self._config.slot,),
        )
        found = await cursor.fetchone()
        self._lag_at = time.monotonic() + self._config.lag_interval
        if found is None:
            return
        unread, retained, wal_status, confirmed = found
        view: dict[str, object] = {
            "slot_confirmed_lsn": confirmed,
            "lag_bytes": unread,
            "retained_wal_bytes": retained,
            "wal_status": wal_status,
        }
        if retained is not None and retained > self._config.max_retained_wal:
            view["behind"] = (
                f"slot {self._config.slot} holds {retained} bytes of WAL on the server "
                f"(more than max_retained_wal = {self._config.max_retained_wal})"
            )
        self._slot_view = view

    def _translate(self, exc: BaseException) -> Exception:
        import psycopg

        if isinstance(exc, psycopg.errors.ObjectInUse):
            # The slot is held by another backend: an earlier attempt's, still ending.
            return BrokerUnavailable(
                f"{ROLE}: {server_name(self._config)} unavailable: {exc.diag.message_primary}"
            )
        return translate(exc, self._config, ROLE)
