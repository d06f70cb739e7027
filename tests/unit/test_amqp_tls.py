"""The amqp connector over TLS (amqps://) against a real RabbitMQ node whose TLS listener
wants a client certificate, with certificates made for the test (`make_certificates`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.connectors.amqp.config import AmqpSinkConfig, AmqpSourceConfig
from supervisor.connectors.amqp.sink import AmqpSink
from supervisor.connectors.amqp.source import AmqpSource
from supervisor.errors import BrokerRefused
from tests import amqp_broker as broker
from tests.servers import Certificates, RabbitServer, make_certificates, require_module

pytestmark = pytest.mark.anyio

_names = itertools.count()


@pytest.fixture(scope="module")
def tls_rabbit(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RabbitServer, Certificates]]:
    require_module("aio_pika", "amqp")
    directory = tmp_path_factory.mktemp("rabbitmq-tls")
    certs = make_certificates(directory / "certs")
    server = RabbitServer(directory, tls=certs)
    server.start()
    try:
        yield server, certs
    finally:
        server.stop()


def _tls(certs: Certificates, **override: Any) -> dict[str, Any]:
    keys = {
        "tls_ca_file": certs.ca,
        "tls_cert_file": certs.client_cert,
        "tls_key_file": certs.client_key,
    }
    return {**keys, **override}


async def test_sink_and_source_over_tls_with_a_client_certificate(
    tls_rabbit: tuple[RabbitServer, Certificates],
) -> None:
    """Written by the sink over amqps://, read back and acknowledged by the source."""
    server, certs = tls_rabbit
    queue = f"tls-{next(_names)}"
    await broker.declare(server.url, queue, exchange=f"{queue}-x", routing_key="k")
    sink = AmqpSink(
        AmqpSinkConfig(url=server.tls_url, exchange=f"{queue}-x", routing_key="k", **_tls(certs)),
        "unit",
    )
    await sink.open()
    try:
        await sink.write([{"seq": n} for n in range(20)])
        await sink.flush({"any": 1})
    finally:
        await sink.close()
    source = AmqpSource(
        AmqpSourceConfig(url=server.tls_url, queue=queue, **_tls(certs)), "unit", 100
    )
    await source.open(None)
    try:
        records: list[object] = []
        while len(records) < 20:
            batch = await source.read(100, 5.0)
            assert batch.records, "nothing arrived in 5 s"
            records += batch.records
        assert records == [{"seq": n} for n in range(20)]
        assert batch.offset is not None
        await source.commit(batch.offset)
    finally:
        await source.close()
    assert await broker.count(server.url, queue) == 0


async def test_a_broker_certificate_from_another_ca_is_refused(
    tls_rabbit: tuple[RabbitServer, Certificates], tmp_path: Path
) -> None:
    """Fatal, naming tls_ca_file: retrying does not fix a CA."""
    server, certs = tls_rabbit
    other = make_certificates(tmp_path / "other").ca
    sink = AmqpSink(
        AmqpSinkConfig(url=server.tls_url, exchange="", **_tls(certs, tls_ca_file=other)), "unit"
    )
    with pytest.raises(BrokerRefused, match=r"^sink\.tls_ca_file: cannot verify amqps://"):
        await sink.open()
    await sink.close()


async def test_a_client_certificate_the_broker_does_not_trust_is_refused(
    tls_rabbit: tuple[RabbitServer, Certificates], tmp_path: Path
) -> None:
    """Fatal, naming tls_cert_file (it was retried forever as a lost connection)."""
    server, certs = tls_rabbit
    other = make_certificates(tmp_path / "other")
    keys = _tls(certs, tls_cert_file=other.client_cert, tls_key_file=other.client_key)
    sink = AmqpSink(AmqpSinkConfig(url=server.tls_url, exchange="", **keys), "unit")
    with pytest.raises(
        BrokerRefused, match=r"^sink\.tls_cert_file: amqps://.* refused our client certificate"
    ):
        await sink.open()
    await sink.close()
