"""The ``postgres-cdc`` source against a real server (wal_level=logical): changes in
commit order with table, key and values; the slot moves only in `commit`; a reopen at
an offset repeats nothing it covers (also inside a transaction split across batches);
heartbeats move an idle slot; a slot holding too much WAL shows in `progress`; clear
errors naming the key."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from supervisor.connectors.postgres.cdc_config import PostgresCdcSourceConfig
from supervisor.connectors.postgres.cdc_source import PostgresCdcSource, check_offset
from supervisor.connectors.postgres.pgoutput import lsn_value
from supervisor.errors import BrokerRefused
from tests.servers import PostgresServer

pytestmark = pytest.mark.anyio

SCHEMA = """CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(8, 2),
    ok boolean, doc jsonb, ratio float8, tags int[]);
CREATE TABLE other (id int PRIMARY KEY);
CREATE PUBLICATION capture FOR TABLE items"""


def _config(server: PostgresServer, **changes: Any) -> PostgresCdcSourceConfig:
    options: dict[str, Any] = {
        "url": server.url,
        "slot": "capture_slot",
        "publication": "capture",
        "poll_interval": 0.05,
        "lag_interval": 0.01,
    }
    options.update(changes)
    return PostgresCdcSourceConfig(**options)


def _confirmed(server: PostgresServer, slot: str = "capture_slot") -> int:
    [(lsn,)] = server.query(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    )
    return lsn_value(lsn)


async def _drain(source: PostgresCdcSource, limit: int = 1000) -> list[Any]:
    records: list[Any] = []
    while True:
        batch = await source.read(limit, 0)
        if not batch.records:
            return records
        records.extend(batch.records)


async def test_changes_arrive_in_commit_order_with_table_key_and_values(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(SCHEMA)
    source = PostgresCdcSource(_config(postgres_server))
    await source.open(None)  # creates the slot: capture starts now
    try:
        with psycopg.connect(postgres_server.url) as early:
            early.execute("INSERT INTO items (id, name) VALUES (1, 'began first')")
            postgres_server.execute(
                "INSERT INTO items VALUES (2, 'committed first', 12.50, true, "
                """'{"a": [1, 2]}', 'NaN', '{1,2}')"""
            )
            early.commit()
        postgres_server.execute("UPDATE items SET name = 'renamed', price = 3 WHERE id = 2")
        postgres_server.execute("UPDATE items SET id = 20 WHERE id = 2")
        postgres_server.execute("INSERT INTO other VALUES (7)")  # not published
        postgres_server.execute("DELETE FROM items WHERE id = 1")
        postgres_server.execute("ALTER TABLE items REPLICA IDENTITY FULL")
        postgres_server.execute("DELETE FROM items WHERE id = 20")
        records = await _drain(source)
    finally:
        await source.close()
    assert records[0] == {
        "op": "insert",
        "table": "public.items",
        "key": {"id": 2},
        "values": {
            "id": 2,
            "name": "committed first",
            "price": 12.5,
            "ok": True,
            "doc": {"a": [1, 2]},
            "ratio": "NaN",
            "tags": "{1,2}",
        },
    }
    assert records[1]["values"] == {
        "id": 1, "name": "began first", "price": None, "ok": None, "doc": None,
        "ratio": None, "tags": None,
    }  # fmt: skip
    assert [(r["op"], r["key"]) for r in records[2:5]] == [
        ("update", {"id": 2}),
        ("update", {"id": 20}),
        ("delete", {"id": 1}),
    ]
    # REPLICA IDENTITY FULL: the key is the whole old row.
    assert records[5]["op"] == "delete" and records[5]["key"]["id"] == 20
    assert records[2]["values"]["name"] == "renamed" and records[2]["values"]["price"] == 3
    assert records[3]["old_key"] == {"id": 2}
    assert "old_values" not in records[4]
    assert records[5]["old_values"]["name"] == "renamed"  # REPLICA IDENTITY FULL


async def test_the_slot_moves_only_on_commit_and_a_reopen_repeats_nothing_covered(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(SCHEMA)
    source = PostgresCdcSource(_config(postgres_server))
    await source.open(None)
    created_at = _confirmed(postgres_server)
    for n in range(5):
        postgres_server.execute("INSERT INTO items (id) VALUES (%s)", (n,))
    first = await source.read(3, 0)
    assert [r["key"]["id"] for r in first.records] == [0, 1, 2]
    assert _confirmed(postgres_server) == created_at  # read, not yet checkpointed
    assert first.offset is not None
    await source.commit(first.offset)
    slot_at = _confirmed(postgres_server)
    assert created_at < slot_at <= lsn_value(first.offset[0])  # type: ignore[index,arg-type]
    second = await source.read(10, 0)
    assert [r["key"]["id"] for r in second.records] == [3, 4]
    await source.close()  # a crash: the second batch never committed
    assert _confirmed(postgres_server) == slot_at
    again = PostgresCdcSource(_config(postgres_server))
    await again.open(first.offset)
    assert [r["key"]["id"] for r in await _drain(again)] == [3, 4]
    await again.close()
    assert source.replayable


async def test_a_transaction_split_across_batches_resumes_inside_it(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(SCHEMA)
    source = PostgresCdcSource(_config(postgres_server))
    await source.open(None)
    postgres_server.execute("INSERT INTO items (id) SELECT generate_series(1, 10)")
    postgres_server.execute("INSERT INTO items (id) VALUES (11)")
    before = _confirmed(postgres_server)
    part = await source.read(4, 0)
    assert part.offset is not None and part.offset[1] == 4  # type: ignore[index]
    await source.commit(part.offset)
    assert _confirmed(postgres_server) == before  # never past a transaction half read
    await source.close()
    again = PostgresCdcSource(_config(postgres_server))
    await again.open(part.offset)
    rest = await again.read(4, 0)
    assert [r["key"]["id"] for r in rest.records] == [5, 6, 7, 8]
    assert [r["key"]["id"] for r in await _drain(again)] == [9, 10, 11]
    await again.close()


async def test_an_idle_database_still_moves_the_slot(postgres_server: PostgresServer) -> None:
    postgres_server.execute(SCHEMA)
    source = PostgresCdcSource(_config(postgres_server, heartbeat_interval=0.05))
    await source.open(None)
    try:
        start = _confirmed(postgres_server)
        offset = None
        for _ in range(100):
            batch = await source.read(10, 0.1)
            assert batch.records == []
            if batch.offset is not None:
                offset = batch.offset
                break
        assert offset is not None, "no heartbeat came back"
        await source.commit(offset)
        assert _confirmed(postgres_server) > start
    finally:
        await source.close()


async def test_a_slot_holding_too_much_wal_is_reported(postgres_server: PostgresServer) -> None:
    postgres_server.execute(SCHEMA)
    source = PostgresCdcSource(_config(postgres_server, max_retained_wal=1000))
    await source.open(None)
    try:
        postgres_server.execute("INSERT INTO other SELECT generate_series(1, 2000)")
        await source.read(10, 0)
        view = source.progress()
        assert view is not None
        assert view["slot"] == "capture_slot"
        assert isinstance(view["retained_wal_bytes"], int) and view["retained_wal_bytes"] > 1000
        assert "holds" in str(view["behind"])
    finally:
        await source.close()


async def test_bad_setups_are_refused_naming_the_key(postgres_server: PostgresServer) -> None:
    postgres_server.execute(SCHEMA)
    postgres_server.execute(
        "SELECT pg_create_logical_replication_slot('decoding_slot', 'test_decoding')"
    )
    cases: list[tuple[dict[str, Any], Any, str]] = [
        ({"publication": "nope"}, None, "source.publication: no publication nope on postgres"),
        ({"slot": "decoding_slot"}, None, "source.slot: slot decoding_slot on .* is for plugin"),
        ({"slot": "gone"}, ["0/1000", 0], "source.slot: no slot gone on .* has read from it"),
        ({"slot": "absent", "create_slot": False}, None, "source.slot: no slot absent on"),
    ]
    for changes, offset, message in cases:
        source = PostgresCdcSource(_config(postgres_server, **changes))
        with pytest.raises(BrokerRefused, match=message):
            await source.open(offset)
        await source.close()


def test_check_offset_refuses_what_open_cannot_resume_from() -> None:
    check_offset(["0/16B3748", 0])
    check_offset(["16/B374D848", 12])
    for bad in (None, "0/1", ["0/1"], ["0/1", -1], ["x/1", 0], ["01", 0], [5, 0], ["0/1", True]):
        with pytest.raises(ValueError, match=r'\["LSN", n\]'):
            check_offset(bad)  # type: ignore[arg-type]
