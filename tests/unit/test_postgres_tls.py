"""The ``postgres`` sink over TLS: libpq's sslmode and sslrootcert, and a certificate that
does not verify refused naming the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.connectors.postgres.config import PostgresSinkConfig
from supervisor.connectors.postgres.connect import connect
from supervisor.connectors.postgres.sink import PostgresSink
from supervisor.errors import BrokerRefused
from tests.servers import PostgresServer, make_certificates, require_module

pytestmark = pytest.mark.anyio


@pytest.fixture
def tls_server() -> Iterator[PostgresServer]:
    require_module("psycopg", "postgres")
    server = PostgresServer(tls=True)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def _config(server: PostgresServer, **keys: object) -> PostgresSinkConfig:
    return PostgresSinkConfig(
        url=server.url,
        table="t",
        columns=(("a", "a"),),
        **keys,  # type: ignore[arg-type]
    )


async def test_verify_full_with_the_right_ca_writes(tls_server: PostgresServer) -> None:
    tls_server.execute("CREATE TABLE t (a int)")
    config = _config(tls_server, sslmode="verify-full", sslrootcert=tls_server.ca_file)
    sink = PostgresSink(config, "j")
    await sink.open()
    await sink.write([{"a": 1}])
    await sink.flush(1)
    await sink.close()
    assert tls_server.query("SELECT a FROM t") == [(1,)]
    connection = await connect(config, "sink")
    try:
        assert connection.pgconn.ssl_in_use
    finally:
        await connection.close()


async def test_a_certificate_from_another_ca_is_refused(
    tls_server: PostgresServer, tmp_path: Path
) -> None:
    tls_server.execute("CREATE TABLE t (a int)")
    other_ca = make_certificates(tmp_path / "other").ca
    sink = PostgresSink(_config(tls_server, sslmode="verify-full", sslrootcert=other_ca), "j")
    with pytest.raises(
        BrokerRefused, match=r"^sink\.sslmode: postgresql://.*certificate verify failed"
    ):
        await sink.open()
    await sink.close()
