"""The amqp sink against a real RabbitMQ node: publishes confirmed at flush, routing keys,
unroutable and oversized messages, a missing exchange."""

from __future__ import annotations

import itertools
import json
import re

import aio_pika
import pytest

from supervisor.connectors.amqp.config import AmqpSinkConfig
from supervisor.connectors.amqp.sink import AmqpSink
from supervisor.errors import BrokerRefused
from tests import amqp_broker as broker
from tests.servers import RabbitServer

pytestmark = pytest.mark.anyio

_names = itertools.count()


def _sink(server: RabbitServer, **keys: object) -> AmqpSink:
    return AmqpSink(AmqpSinkConfig(url=server.url, **keys), "unit")  # type: ignore[arg-type]


async def test_flush_returns_once_every_message_is_confirmed(rabbit_server: RabbitServer) -> None:
    """After flush the queue holds every record, persistent, as compact JSON, in order."""
    name = f"sink-{next(_names)}"
    await broker.declare(rabbit_server.url, name, exchange=f"{name}-x", routing_key="k")
    sink = _sink(rabbit_server, exchange=f"{name}-x", routing_key="k")
    await sink.open()
    try:
        await sink.write([{"seq": n} for n in range(5000)])
        await sink.flush({"any": 1})
    finally:
        await sink.close()
    messages = await broker.take_all(rabbit_server.url, name)
    assert [json.loads(m.body)["seq"] for m in messages] == list(range(5000))
    assert messages[0].delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert messages[0].content_type == "application/json"


async def test_each_message_has_its_own_message_id(rabbit_server: RabbitServer) -> None:
    """A classic queue's source counts redeliveries by message id: one id shared by every
    message (aiormq writes a generated id into the properties it is handed, so shared
    properties would carry the first message's id to all) made a crash's redeliveries
    look like one poison message delivered thousands of times."""
    name = f"sink-{next(_names)}"
    await broker.declare(rabbit_server.url, name, exchange=f"{name}-x", routing_key="k")
    sink = _sink(rabbit_server, exchange=f"{name}-x", routing_key="k")
    await sink.open()
    try:
        await sink.write([{"seq": n} for n in range(50)])
        await sink.flush({"any": 1})
        await sink.write([{"seq": n} for n in range(50, 100)])
        await sink.flush({"any": 2})
    finally:
        await sink.close()
    messages = await broker.take_all(rabbit_server.url, name)
    ids = [m.message_id for m in messages]
    assert len(ids) == 100
    assert None not in ids
    assert len(set(ids)) == 100


async def test_routing_key_from_a_record_field(rabbit_server: RabbitServer) -> None:
    """routing_key_field picks each message's key; records without it use routing_key."""
    name = f"sink-{next(_names)}"
    await broker.declare(rabbit_server.url, f"{name}-a", exchange=f"{name}-x", routing_key="a")
    await broker.declare(rabbit_server.url, f"{name}-b", exchange=f"{name}-x", routing_key="b")
    sink = _sink(
        rabbit_server, exchange=f"{name}-x", routing_key="a", routing_key_field="to", format="text"
    )
    await sink.open()
    try:
        await sink.write([{"to": "b", "n": 1}, {"n": 2}, "plain", {"to": "a", "n": 3}])
        await sink.flush(None)
    finally:
        await sink.close()
    to_a = [m.body for m in await broker.take_all(rabbit_server.url, f"{name}-a")]
    to_b = [m.body for m in await broker.take_all(rabbit_server.url, f"{name}-b")]
    assert to_a == [b'{"n":2}', b"plain", b'{"to":"a","n":3}']
    assert to_b == [b'{"to":"b","n":1}']


async def test_an_unroutable_message_fails_the_flush(rabbit_server: RabbitServer) -> None:
    """mandatory: a message no queue takes comes back and the flush says so."""
    name = f"sink-{next(_names)}"
    await broker.declare(rabbit_server.url, name, exchange=f"{name}-x", routing_key="k")
    sink = _sink(rabbit_server, exchange=f"{name}-x", routing_key="nowhere")
    await sink.open()
    try:
        await sink.write([{"seq": 1}])
        with pytest.raises(BrokerRefused, match="routes routing key 'nowhere' to no queue"):
            await sink.flush(None)
    finally:
        await sink.close()


async def test_a_missing_exchange_is_refused_at_open(rabbit_server: RabbitServer) -> None:
    """The exchange is looked up (passively) when the sink opens."""
    sink = _sink(rabbit_server, exchange="no-such-exchange")
    with pytest.raises(BrokerRefused, match=re.escape('sink.exchange: no exchange "no-such-')):
        await sink.open()
    await sink.close()


async def test_a_message_above_the_brokers_limit_is_refused(rabbit_server: RabbitServer) -> None:
    """The test node's max_message_size is 1 MiB: a larger record names its size."""
    name = f"sink-{next(_names)}"
    await broker.declare(rabbit_server.url, name)
    sink = _sink(rabbit_server, exchange="", routing_key=name, format="text")
    await sink.open()
    try:
        await sink.write(["x" * (2 * 1024 * 1024)])
        with pytest.raises(BrokerRefused, match="a record of 2097152 bytes is larger than"):
            await sink.flush(None)
    finally:
        await sink.close()
