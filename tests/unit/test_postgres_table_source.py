"""The ``postgres`` table source against a real server of the test's own.

First the problem: a naive ``WHERE id > last`` cursor LOSES a row when a transaction
that took a lower id commits after one that took a higher id. Then the same scenario,
and 8 writers committing out of order, with this source: nothing lost, nothing twice.
Then its offset, start, LISTEN/NOTIFY wake-up, lag, and the errors naming the key.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import anyio
import psycopg
import pytest

from supervisor.connectors.postgres.config import PostgresTableSourceConfig
from supervisor.connectors.postgres.table_source import PostgresTableSource, check_offset
from supervisor.errors import BrokerRefused, BrokerUnavailable
from tests.servers import PostgresServer

pytestmark = pytest.mark.anyio

TABLE = """CREATE TABLE events (
    id bigserial PRIMARY KEY,
    body text,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX events_xid_id ON events (xid, id)"""

NOTIFY = """CREATE FUNCTION events_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('events_added', ''); RETURN NULL; END $$;
CREATE TRIGGER events_notify AFTER INSERT ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_notify()"""


def _config(server: PostgresServer, **changes: Any) -> PostgresTableSourceConfig:
    options: dict[str, Any] = {"url": server.url, "table": "events", "poll_interval": 0.05}
    options.update(changes)
    return PostgresTableSourceConfig(**options)


def _bodies(records: list[Any]) -> list[str]:
    return [record["body"] for record in records]


async def _drain(source: PostgresTableSource, wait: float = 0.0) -> list[Any]:
    """Everything readable now."""
    records: list[Any] = []
    while True:
        batch = await source.read(1000, wait)
        if not batch.records:
            return records
        records.extend(batch.records)


def test_a_naive_id_cursor_loses_a_row_committed_out_of_order(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    with (
        psycopg.connect(postgres_server.url) as first,
        psycopg.connect(postgres_server.url, autocommit=True) as reader,
    ):
        first.execute("INSERT INTO events (body) VALUES ('first')")  # id 1, not committed
        postgres_server.execute("INSERT INTO events (body) VALUES ('second')")  # id 2, committed
        seen = reader.execute("SELECT id, body FROM events WHERE id > 0 ORDER BY id").fetchall()
        assert seen == [(2, "second")]
        last = seen[-1][0]
        first.commit()
        after = reader.execute("SELECT id FROM events WHERE id > %s", (last,)).fetchall()
        assert after == []  # 'first' (id 1) is never read: LOST
    assert len(postgres_server.query("SELECT id FROM events")) == 2


async def test_the_source_holds_a_later_commit_back_until_the_earlier_ends(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    source = PostgresTableSource(_config(postgres_server))
    await source.open(None)
    try:
        with psycopg.connect(postgres_server.url) as first:
            first.execute("INSERT INTO events (body) VALUES ('first')")
            postgres_server.execute("INSERT INTO events (body) VALUES ('second')")
            batch = await source.read(100, 0.1)
            assert batch.records == []  # 'second' waits for 'first''s transaction
            assert batch.offset is None
            first.commit()
        records = await _drain(source)
        assert _bodies(records) == ["first", "second"]
        assert [record["id"] for record in records] == [1, 2]
        # A rolled-back transaction ends too: what follows it is not held back.
        with psycopg.connect(postgres_server.url) as aborted:
            aborted.execute("INSERT INTO events (body) VALUES ('never')")
            postgres_server.execute("INSERT INTO events (body) VALUES ('third')")
            aborted.rollback()
        assert _bodies(await _drain(source)) == ["third"]
    finally:
        await source.close()


def _writer(url: str, seed: int, transactions: int, start: threading.Barrier) -> None:
    rng = random.Random(seed)
    start.wait()
    with psycopg.connect(url) as connection:
        for n in range(transactions):
            for row in range(rng.randint(1, 4)):
                connection.execute(
                    "INSERT INTO events (body) VALUES (%s)", (f"w{seed}-t{n}-r{row}",)
                )
                if rng.random() < 0.3:
                    connection.execute("SELECT pg_sleep(0.002)")  # others commit meanwhile
            if rng.random() < 0.1:
                connection.rollback()
            else:
                connection.commit()


async def test_eight_writers_committing_out_of_order_lose_nothing(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    source = PostgresTableSource(_config(postgres_server))
    await source.open(None)
    start = threading.Barrier(8)
    threads = [
        threading.Thread(target=_writer, args=(postgres_server.url, seed, 60, start))
        for seed in range(8)
    ]
    read: list[Any] = []
    try:
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            batch = await source.read(50, 0.01)  # small batches: reads interleave with commits
            read.extend(batch.records)
        for thread in threads:
            thread.join()
        read.extend(await _drain(source))
    finally:
        await source.close()
    committed = postgres_server.query("SELECT id FROM events ORDER BY xid, id")
    ids = [record["id"] for record in read]
    assert len(ids) == len(set(ids)), "a row read twice"
    assert ids == [row[0] for row in committed]  # every row, in commit order
    assert sorted(ids) != ids, "the writers did not commit out of order: the test proves nothing"


async def test_reopening_at_an_offset_replays_the_same_rows(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    for n in range(10):
        postgres_server.execute("INSERT INTO events (body) VALUES (%s)", (f"r{n}",))
    source = PostgresTableSource(_config(postgres_server))
    await source.open(None)
    first = await source.read(4, 0)
    rest = await _drain(source)
    await source.close()
    assert source.replayable
    offset = first.offset
    assert isinstance(offset, list) and offset[1] == 4
    check_offset(offset)
    again = PostgresTableSource(_config(postgres_server, columns=("id", "body")))
    await again.open(offset)
    replay = await _drain(again)
    await again.close()
    assert replay == [{"id": record["id"], "body": record["body"]} for record in rest]


async def test_start_end_pins_the_rows_committed_at_open(postgres_server: PostgresServer) -> None:
    postgres_server.execute(TABLE)
    postgres_server.execute("INSERT INTO events (body) VALUES ('old'), ('older')")
    with psycopg.connect(postgres_server.url) as running:
        running.execute("INSERT INTO events (body) VALUES ('running at open')")
        source = PostgresTableSource(_config(postgres_server, start="end"))
        await source.open(None)
        position = source.position()
        assert isinstance(position, list) and position[1] == 2
        running.commit()
    postgres_server.execute("INSERT INTO events (body) VALUES ('new')")
    assert _bodies(await _drain(source)) == ["running at open", "new"]
    await source.close()
    empty = PostgresTableSource(_config(postgres_server, table="events", start="end"))
    postgres_server.execute("TRUNCATE events")
    await empty.open(None)
    assert empty.position() is None  # nothing to skip: the beginning
    await empty.close()


async def test_a_notification_wakes_the_read_before_the_poll_interval(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    postgres_server.execute(NOTIFY)
    source = PostgresTableSource(
        _config(postgres_server, notify_channel="events_added", poll_interval=30)
    )
    await source.open(None)
    try:
        async with anyio.create_task_group() as tasks:

            async def insert_soon() -> None:
                await anyio.sleep(0.2)
                await anyio.to_thread.run_sync(
                    postgres_server.execute, "INSERT INTO events (body) VALUES ('hello')"
                )

            tasks.start_soon(insert_soon)
            started = anyio.current_time()
            batch = await source.read(10, 20)
            assert _bodies(list(batch.records)) == ["hello"]
            assert anyio.current_time() - started < 5
    finally:
        await source.close()


async def test_progress_shows_position_lag_and_rows_held_back(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    for n in range(30):
        postgres_server.execute("INSERT INTO events (body) VALUES (%s)", (f"r{n}",))
    source = PostgresTableSource(_config(postgres_server, lag_interval=0.01, lag_limit=25))
    await source.open(None)
    try:
        await source.read(5, 0)
        view = source.progress()
        assert view is not None and view["position"] == [view["position"][0], 5]  # type: ignore[index]
        assert view["lag"] == 25 and view.get("lag_at_least") is True  # counted up to 25
        await _drain(source)
        with psycopg.connect(postgres_server.url) as holding:
            holding.execute("INSERT INTO events (body) VALUES ('open')")
            postgres_server.execute("INSERT INTO events (body) VALUES ('waiting')")
            await anyio.sleep(0.02)
            await source.read(10, 0)
            view = source.progress()
            assert view is not None and view["lag"] == 1 and "held_back" in view
            holding.rollback()
    finally:
        await source.close()


def test_check_offset_refuses_what_open_cannot_resume_from() -> None:
    check_offset([741, 12])
    check_offset([741, "a1b2"])
    for bad in (None, 5, [1], [1, 2, 3], [-1, 2], [True, 2], [1, 2.5], [1, False], {"x": 1}):
        with pytest.raises(ValueError, match=r"\[xid, id\]"):
            check_offset(bad)  # type: ignore[arg-type]


async def test_a_missing_table_or_column_is_refused_naming_the_key(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute("CREATE TABLE plain (id bigint, xid bigint)")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"table": "nowhere"}, "source.table: no table nowhere on postgresql://"),
        ({"table": "plain"}, "source.xid_column: table plain on .* has bigint, not xid8, in xid"),
        ({"table": "plain", "xid_column": "txid"}, "source.xid_column: .* has no column txid"),
    ]
    postgres_server.execute(TABLE)
    cases += [
        ({"id_column": "seq"}, "source.id_column: table events on .* has no column seq"),
        ({"columns": ("body", "nope")}, "source.columns: table events on .* has no column nope"),
    ]
    for changes, message in cases:
        source = PostgresTableSource(_config(postgres_server, **changes))
        with pytest.raises(BrokerRefused, match=message):
            await source.open(None)
        await source.close()


async def test_a_server_gone_mid_stream_is_unavailable(postgres_server: PostgresServer) -> None:
    postgres_server.execute(TABLE)
    postgres_server.execute("INSERT INTO events (body) VALUES ('a')")
    source = PostgresTableSource(_config(postgres_server))
    await source.open(None)
    assert len((await source.read(10, 0)).records) == 1
    postgres_server.kill()
    with pytest.raises(BrokerUnavailable, match=r"source: postgresql://.* unavailable"):
        await source.read(10, 0)
    await source.close()
