"""The redis connector over TLS (rediss://) against a real redis-server with TLS and
client certificates, made for the test with openssl (`tests.servers.make_certificates`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.connectors.redis.sink import RedisSink
from supervisor.connectors.redis.source import ReplaySource
from supervisor.errors import BrokerRefused
from tests.redis_helpers import drain, numbers, sink_config, source_config
from tests.servers import (
    Certificates,
    ServerProcess,
    free_port,
    make_certificates,
    require,
    require_module,
)


@pytest.fixture
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Certificates]]:
    """A redis-server that speaks only TLS and wants client certificates: (url, certs)."""
    require_module("redis", "redis")
    directory = tmp_path_factory.mktemp("tls")
    certs = make_certificates(directory / "certs")
    port = free_port()
    argv = [
        require("redis-server", "redis-server"),
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--dir", str(directory), "--save", "", "--daemonize", "no",
        "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
        "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "yes",
    ]  # fmt: skip
    server = ServerProcess("redis-tls", argv, port, directory)
    server.start()
    try:
        yield f"rediss://127.0.0.1:{port}/0", certs
    finally:
        server.kill()


def _tls(certs: Certificates, ca: Path | None = None) -> dict[str, Path]:
    return {
        "tls_ca_file": ca or certs.ca,
        "tls_cert_file": certs.client_cert,
        "tls_key_file": certs.client_key,
    }


@pytest.mark.anyio
async def test_the_sink_and_the_source_speak_tls_with_a_client_certificate(
    tls_server: tuple[str, Certificates],
) -> None:
    """rediss:// with the CA and a client certificate: written by the sink, read back."""
    url, certs = tls_server
    sink = RedisSink(sink_config(url, stream="s", **_tls(certs)))
    await sink.open()
    await sink.write([{"n": str(n)} for n in range(5)])
    await sink.flush(None)
    await sink.close()
    source = ReplaySource(source_config(url, **_tls(certs)), "job")
    await source.open(None)
    assert numbers(await drain(source)) == list(range(5))
    await source.close()


@pytest.mark.anyio
async def test_a_server_certificate_from_another_ca_is_refused(
    tls_server: tuple[str, Certificates], tmp_path: Path
) -> None:
    """The server's certificate does not verify against tls_ca_file: no connection, and a
    fatal error naming the key (retrying cannot fix a CA), like the other brokers'."""
    url, certs = tls_server
    other = make_certificates(tmp_path / "other").ca
    source = ReplaySource(source_config(url, timeout=5.0, **_tls(certs, other)), "job")
    with pytest.raises(
        BrokerRefused, match=r"source\.tls_ca_file: cannot verify rediss://127\.0\.0\.1:\d+/0"
    ) as raised:
        await source.open(None)
    await source.close()
    assert "certificate verify failed" in str(raised.value)
