"""The ``postgres`` sink against a real server of the test's own: rows and offset in one
transaction, upsert, refused records isolated and handed to the records policy, and a
clear error for each way the connection or the table can be wrong."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from supervisor.connectors.postgres.config import PostgresSinkConfig
from supervisor.connectors.postgres.sink import PostgresSink
from supervisor.errors import BrokerRefused, BrokerUnavailable
from supervisor.protocols import Rejected
from supervisor.secrets import Secret
from tests.servers import PostgresServer, free_port

pytestmark = pytest.mark.anyio

TABLE = """CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer text NOT NULL,
    amount integer CHECK (amount >= 0),
    extra jsonb
)"""


def _config(server: PostgresServer, **changes: Any) -> PostgresSinkConfig:
    options: dict[str, Any] = {
        "url": server.url,
        "table": "orders",
        "columns": (("id", "id"), ("customer", "name"), ("amount", "amount"), ("extra", "extra")),
    }
    options.update(changes)
    return PostgresSinkConfig(**options)


class Collect:
    def __init__(self) -> None:
        self.rejected: list[Rejected] = []

    async def __call__(self, rejects: Sequence[Rejected]) -> None:
        self.rejected.extend(rejects)


async def test_rows_and_offset_commit_together_and_open_returns_the_offset(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    sink = PostgresSink(_config(postgres_server), "job-a")
    assert await sink.open() is None
    await sink.write([{"id": 1, "name": "ann", "amount": 5, "extra": {"tags": ["x"]}}])
    await sink.write([{"id": 2, "name": "bob"}])  # missing amount and extra: NULL
    await sink.flush({"file": "x", "position": 2})
    await sink.close()
    assert postgres_server.query("SELECT id, customer, amount, extra FROM orders ORDER BY id") == [
        (1, "ann", 5, {"tags": ["x"]}),
        (2, "bob", None, None),
    ]
    again = PostgresSink(_config(postgres_server), "job-a")
    assert await again.open() == {"file": "x", "position": 2}
    await again.close()
    other = PostgresSink(_config(postgres_server), "job-b")
    assert await other.open() is None  # keyed by job name
    await other.close()


async def test_upsert_updates_the_row_with_the_same_key(postgres_server: PostgresServer) -> None:
    postgres_server.execute(TABLE)
    sink = PostgresSink(_config(postgres_server, mode="upsert", key=("id",)), "job")
    await sink.open()
    await sink.write([{"id": 1, "name": "ann", "amount": 1}, {"id": 2, "name": "bob"}])
    await sink.write([{"id": 1, "name": "ann", "amount": 7}])  # same key in the same batch
    await sink.flush(3)
    await sink.write([{"id": 2, "name": "bobby", "amount": 2}])
    await sink.flush(4)
    await sink.close()
    assert postgres_server.query("SELECT id, customer, amount FROM orders ORDER BY id") == [
        (1, "ann", 7),
        (2, "bobby", 2),
    ]


@pytest.mark.parametrize("mode", ["insert", "upsert"])
async def test_refused_records_go_to_the_policy_and_their_neighbours_are_kept(
    postgres_server: PostgresServer, mode: str
) -> None:
    postgres_server.execute(TABLE)
    key = ("id",) if mode == "upsert" else ()
    sink = PostgresSink(_config(postgres_server, mode=mode, key=key), "job")
    collect = Collect()
    sink.reject_with(collect)
    await sink.open()
    good = [{"id": i, "name": f"c{i}", "amount": i} for i in range(100)]
    bad = {
        13: {"id": 1013, "name": None},  # NOT NULL
        40: {"id": 1040, "name": "x", "amount": -1},  # CHECK
        41: {"id": 1041, "name": "x", "amount": "lots"},  # not an integer
        77: ["not", "an", "object"],  # not a table
        90: {"id": 1090, "name": "nul\x00byte"},  # text cannot hold NUL
    }
    records: list[Any] = []
    for index, record in enumerate(good):
        if index in bad:
            records.append(bad[index])
        records.append(record)
    await sink.write(records)
    await sink.flush(len(records))
    await sink.close()
    ids = [row[0] for row in postgres_server.query("SELECT id FROM orders ORDER BY id")]
    assert ids == list(range(100))
    assert sorted(map(repr, (r.raw for r in collect.rejected))) == sorted(map(repr, bad.values()))
    errors = " | ".join(str(r.error) for r in collect.rejected)
    assert "not-null" in errors and "check constraint" in errors
    assert postgres_server.query("SELECT job_offset FROM stream_supervisor_offsets") == [(105,)]


async def test_a_duplicate_key_in_insert_mode_rejects_only_the_second(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    sink = PostgresSink(_config(postgres_server), "job")
    collect = Collect()
    sink.reject_with(collect)
    await sink.open()
    await sink.write([{"id": i % 50, "name": "n"} for i in range(60)])
    await sink.flush(60)
    await sink.close()
    assert postgres_server.query("SELECT count(*) FROM orders") == [(50,)]
    assert [r.raw["id"] for r in collect.rejected] == list(range(10))


async def test_when_the_policy_raises_nothing_of_the_batch_is_committed(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    sink = PostgresSink(_config(postgres_server), "job")

    async def fail(rejects: Sequence[Rejected]) -> None:
        raise rejects[0].error

    sink.reject_with(fail)
    await sink.open()
    await sink.write([{"id": 1, "name": "a"}, {"id": 2, "name": None}])
    with pytest.raises(Exception, match="not-null"):
        await sink.flush(2)
    await sink.close()
    assert postgres_server.query("SELECT count(*) FROM orders") == [(0,)]
    assert postgres_server.query("SELECT count(*) FROM stream_supervisor_offsets") == [(0,)]


async def test_a_missing_table_column_or_unique_key_is_refused_naming_the_key(
    postgres_server: PostgresServer,
) -> None:
    async def refusal(config: PostgresSinkConfig) -> str:
        sink = PostgresSink(config, "job")
        try:
            with pytest.raises(BrokerRefused) as raised:
                await sink.open()
        finally:
            await sink.close()
        return str(raised.value)

    message = await refusal(_config(postgres_server))
    assert message.startswith("sink.table: no table orders on postgresql://")
    postgres_server.execute(TABLE)
    message = await refusal(_config(postgres_server, columns=(("id", "id"), ("nope", "n"))))
    assert message.startswith('sink.columns: column "nope" of relation "orders" does not exist')
    message = await refusal(_config(postgres_server, mode="upsert", key=("customer",)))
    assert message.startswith("sink.key: table orders on postgresql://")
    assert "(customer)" in message


async def test_connection_failures_are_unavailable_and_credentials_refused(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    password = postgres_server.password
    postgres_server.execute(f"GRANT ALL ON orders TO {postgres_server.PASSWORD_USER}")
    good = _config(postgres_server, url=postgres_server.password_url, password=Secret(password))
    sink = PostgresSink(good, "job")
    await sink.open()
    await sink.close()

    wrong = _config(postgres_server, url=postgres_server.password_url, password=Secret("nope!"))
    with pytest.raises(BrokerRefused, match="password authentication failed") as refused:
        await PostgresSink(wrong, "job").open()
    assert password not in str(refused.value)

    nowhere = _config(postgres_server, url=f"postgresql://u@127.0.0.1:{free_port()}/db")
    with pytest.raises(BrokerUnavailable, match="unavailable"):
        await PostgresSink(nowhere, "job").open()

    no_database = _config(postgres_server, url=postgres_server.url + "_missing")
    with pytest.raises(BrokerRefused, match="does not exist"):
        await PostgresSink(no_database, "job").open()


async def test_a_server_killed_between_flushes_is_unavailable_and_the_offset_survives(
    postgres_server: PostgresServer,
) -> None:
    postgres_server.execute(TABLE)
    sink = PostgresSink(_config(postgres_server), "job")
    await sink.open()
    await sink.write([{"id": 1, "name": "a"}])
    await sink.flush(1)
    postgres_server.kill()
    await sink.write([{"id": 2, "name": "b"}])
    with pytest.raises(BrokerUnavailable):
        await sink.flush(2)
    await sink.close()
    postgres_server.start()
    again = PostgresSink(_config(postgres_server), "job")
    assert await again.open() == 1
    await again.close()
    assert postgres_server.query("SELECT id FROM orders") == [(1,)]


async def test_a_terminated_backend_is_unavailable(postgres_server: PostgresServer) -> None:
    """An administrator's pg_terminate_backend (or a failover) drops the sink's session:
    retried, not fatal."""
    postgres_server.execute(TABLE)
    sink = PostgresSink(_config(postgres_server), "job")
    await sink.open()
    postgres_server.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'stream-supervisor'"
    )
    await sink.write([{"id": 1, "name": "a"}])
    with pytest.raises(BrokerUnavailable, match=r"^sink: postgresql://.* unavailable: "):
        await sink.flush(1)
    await sink.close()
