"""The amqp source against a real RabbitMQ node: reads, acks at commit, redelivery after
a lost channel, poison messages both ways, bad bodies, and refusals."""

from __future__ import annotations

import itertools
import json
import re

import pytest

from supervisor.connectors.amqp.config import AmqpSourceConfig
from supervisor.connectors.amqp.source import AmqpSource
from supervisor.errors import BrokerRefused, BrokerUnavailable
from supervisor.protocols import Batch
from tests import amqp_broker as broker
from tests.servers import RabbitServer

pytestmark = pytest.mark.anyio

_names = itertools.count()


def _queue(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def _source(server: RabbitServer, queue: str, prefetch: int = 100, **keys: object) -> AmqpSource:
    config = AmqpSourceConfig(url=server.url, queue=queue, **keys)  # type: ignore[arg-type]
    return AmqpSource(config, "unit", prefetch)


async def _read_all(source: AmqpSource, count: int) -> list[Batch]:
    batches: list[Batch] = []
    got = 0
    while got < count:
        batch = await source.read(1000, 5.0)
        assert batch.records or batch.rejects, "nothing arrived in 5 s"
        got += len(batch.records) + len(batch.rejects)
        batches.append(batch)
    return batches


def _records(batches: list[Batch]) -> list[object]:
    return [record for batch in batches for record in batch.records]


async def test_reads_in_order_and_acks_only_at_commit(rabbit_server: RabbitServer) -> None:
    """Records come in queue order; before commit a reopened source gets them again."""
    queue = _queue("order")
    await broker.declare(rabbit_server.url, queue)
    await broker.publish(rabbit_server.url, queue, broker.numbered(50))
    source = _source(rabbit_server, queue)
    await source.open(None)
    try:
        batches = await _read_all(source, 50)
    finally:
        await source.close()
    assert _records(batches) == [{"seq": n} for n in range(50)]
    assert batches[-1].offset == {"queue": queue, "consumed": 50}

    again = _source(rabbit_server, queue)
    await again.open(batches[-1].offset)
    try:
        batches = await _read_all(again, 50)
        assert _records(batches) == [{"seq": n} for n in range(50)]
        assert batches[-1].offset == {"queue": queue, "consumed": 100}
        await again.commit(batches[-1].offset)
        progress = again.progress()
        assert progress is not None and progress["unacked"] == 0 and "lag" in progress
    finally:
        await again.close()
    assert await broker.count(rabbit_server.url, queue) == 0


async def test_commit_acks_what_was_read_and_nothing_after(rabbit_server: RabbitServer) -> None:
    """Messages delivered (prefetched) but not read are not acknowledged by a commit."""
    queue = _queue("partial")
    await broker.declare(rabbit_server.url, queue)
    await broker.publish(rabbit_server.url, queue, broker.numbered(30))
    source = _source(rabbit_server, queue)
    await source.open(None)
    try:
        got: list[object] = []
        while len(got) < 10:
            got += (await source.read(10 - len(got), 5.0)).records
        await source.commit({"queue": queue, "consumed": 10})
    finally:
        await source.close()
    assert await broker.count(rabbit_server.url, queue) == 20
    rest = await broker.take_all(rabbit_server.url, queue)
    assert [json.loads(m.body)["seq"] for m in rest] == list(range(10, 30))


async def test_bad_bodies_are_rejected_records_and_acked(rabbit_server: RabbitServer) -> None:
    """A body that is not JSON, or larger than max_message_bytes, is a Rejected, not a crash."""
    queue = _queue("bad")
    await broker.declare(rabbit_server.url, queue)
    bodies = [b'{"seq": 0}', b"not json", b"\xff\xfe", b'"' + b"x" * 5000 + b'"', b'{"seq": 4}']
    await broker.publish(rabbit_server.url, queue, bodies)
    source = _source(rabbit_server, queue, max_message_bytes=4096)
    await source.open(None)
    try:
        batches = await _read_all(source, 5)
        await source.commit(batches[-1].offset or {})
    finally:
        await source.close()
    assert _records(batches) == [{"seq": 0}, {"seq": 4}]
    rejects = [reject for batch in batches for reject in batch.rejects]
    assert [type(r.error).__name__ for r in rejects] == ["JSONDecodeError"] * 2 + ["ValueError"]
    assert rejects[0].raw["data"] == "not json" and rejects[0].raw["queue"] == queue
    assert "data_base64" in rejects[1].raw
    assert "larger than source.max_message_bytes (4096)" in str(rejects[2].error)
    assert rejects[2].raw["size"] == 5002
    assert await broker.count(rabbit_server.url, queue) == 0


async def test_poison_on_a_quorum_queue_goes_to_the_records_policy(
    rabbit_server: RabbitServer,
) -> None:
    """x-delivery-count above max_deliveries: a Rejected saying so, acked at commit."""
    queue = _queue("poison-records")
    await broker.declare(rabbit_server.url, queue, quorum=True)
    await broker.publish(rabbit_server.url, queue, broker.numbered(1))
    await broker.bounce(rabbit_server.url, queue, 3)  # seq 0: delivered 3 times already
    await broker.publish(rabbit_server.url, queue, broker.numbered(2, start=1))
    source = _source(rabbit_server, queue, max_deliveries=3)
    await source.open(None)
    try:
        batches = await _read_all(source, 3)
        await source.commit(batches[-1].offset or {})
    finally:
        await source.close()
    rejects = [reject for batch in batches for reject in batch.rejects]
    assert len(rejects) == 1
    assert "delivered 4 times, more than source.max_deliveries (3)" in str(rejects[0].error)
    assert json.loads(rejects[0].raw["data"]) == {"seq": 0}
    assert sorted(r["seq"] for r in _records(batches)) == [1, 2]  # type: ignore[index]
    assert await broker.count(rabbit_server.url, queue) == 0


async def test_poison_rejected_to_the_dead_letter_exchange(rabbit_server: RabbitServer) -> None:
    """poison = "dead_letter_exchange": the message lands in the DLX's queue, the rest acked."""
    queue = _queue("poison-dlx")
    await broker.declare(rabbit_server.url, queue, quorum=True, dead_letter_exchange=f"{queue}-dlx")
    await broker.publish(rabbit_server.url, queue, broker.numbered(1))
    await broker.bounce(rabbit_server.url, queue, 2)
    await broker.publish(rabbit_server.url, queue, broker.numbered(2, start=1))
    source = _source(rabbit_server, queue, max_deliveries=2, poison="dead_letter_exchange")
    await source.open(None)
    try:
        got: list[object] = []
        offset = None
        while len(got) < 2:
            batch = await source.read(1000, 5.0)
            assert not batch.rejects
            got += batch.records
            offset = batch.offset
        assert offset == {"queue": queue, "consumed": 3}
        await source.commit(offset)
    finally:
        await source.close()
    assert sorted(r["seq"] for r in got) == [1, 2]  # type: ignore[index]
    assert await broker.count(rabbit_server.url, queue) == 0
    dead = await broker.take_all(rabbit_server.url, f"{queue}.dead")
    assert [json.loads(m.body) for m in dead] == [{"seq": 0}]


async def test_classic_queue_counts_redeliveries_by_message_id(
    rabbit_server: RabbitServer,
) -> None:
    """A classic queue has no delivery count: the redelivered flag is counted per message_id."""
    queue = _queue("poison-classic")
    await broker.declare(rabbit_server.url, queue)
    await broker.publish(rabbit_server.url, queue, broker.numbered(1), message_ids=True)
    for attempt in range(3):  # deliveries 1, 2, 3: never acked, so redelivered
        source = _source(rabbit_server, queue, max_deliveries=3)
        await source.open(None)
        try:
            batch = await source.read(10, 5.0)
        finally:
            await source.close()
        assert batch.records == [{"seq": 0}], attempt
    source = _source(rabbit_server, queue, max_deliveries=3)
    await source.open(None)
    try:
        batch = await source.read(10, 5.0)
        await source.commit(batch.offset or {})
    finally:
        await source.close()
    assert not batch.records
    assert "delivered 4 times" in str(batch.rejects[0].error)


async def test_a_lost_connection_fails_the_read_and_the_next_attempt_starts_clean(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Broker killed: read raises BrokerUnavailable; after its restart a new source reads
    everything not acknowledged (old delivery tags are never used)."""
    server = RabbitServer(tmp_path_factory.mktemp("rabbit-lost"))
    server.start()
    try:
        queue = _queue("lost")
        await broker.declare(server.url, queue)
        await broker.publish(server.url, queue, broker.numbered(20))
        source = _source(server, queue)
        await source.open(None)
        try:
            first = await _read_all(source, 20)
            server.restart(kill=False)
            with pytest.raises(
                BrokerUnavailable, match="source: lost amqp://supervisor:\\*\\*\\*@"
            ):
                for _ in range(50):
                    await source.read(10, 1.0)
            with pytest.raises(BrokerUnavailable):
                await source.commit(first[-1].offset or {})
        finally:
            await source.close()
        again = _source(server, queue)
        await again.open(None)
        try:
            batches = await _read_all(again, 20)
            await again.commit(batches[-1].offset or {})
        finally:
            await again.close()
        assert _records(batches) == [{"seq": n} for n in range(20)]
    finally:
        server.kill()


async def test_missing_queue_wrong_password_and_unreachable(rabbit_server: RabbitServer) -> None:
    """Each is our own error naming the key and the redacted server."""
    server = rabbit_server.url_without_password
    missing = _source(rabbit_server, "no-such-queue")
    with pytest.raises(
        BrokerRefused, match=re.escape('source.queue: no queue "no-such-queue" on amqp://')
    ):
        await missing.open(None)
    await missing.close()

    wrong = AmqpSource(
        AmqpSourceConfig(url=server, queue="q", user="supervisor", password_env="AMQP_TEST_PW"),
        "unit",
        10,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AMQP_TEST_PW", "wrong-password-123")
        with pytest.raises(
            BrokerRefused, match=r"source\.user: .* refused the credentials"
        ) as caught:
            await wrong.open(None)
    await wrong.close()
    assert "wrong-password-123" not in str(caught.value)

    unreachable = AmqpSource(AmqpSourceConfig(url="amqp://127.0.0.1:1/", queue="q"), "unit", 10)
    with pytest.raises(
        BrokerUnavailable, match=re.escape("source.url: cannot connect to amqp://127.0.0.1:1/")
    ):
        await unreachable.open(None)
    await unreachable.close()


def test_redeliveries_of_messages_sharing_an_id_are_counted_apart() -> None:
    """Producers reuse message ids; a crash redelivers every held message once: they
    must not add up to one message delivered thousands of times (a false poison)."""
    from supervisor.connectors.amqp.source import RedeliveryCount, redelivery_key

    counts = RedeliveryCount("unit-shared-ids", "q")
    keys = [redelivery_key("same-id", json.dumps({"n": n}).encode()) for n in range(100)]
    assert {counts.deliveries(key) for key in keys} == {2}
    assert counts.deliveries(keys[0]) == 3  # the same message again: counted
