"""The redis connector over TLS (rediss://) against a real redis-server with TLS and
client certificates, made for the test with openssl."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.connectors.redis.sink import RedisSink
from supervisor.connectors.redis.source import ReplaySource
from supervisor.errors import BrokerUnavailable
from tests.redis_helpers import drain, numbers, sink_config, source_config
from tests.servers import ServerProcess, free_port, require, require_module


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _certificates(directory: Path) -> None:
    """ca.pem; server.pem/.key for 127.0.0.1; client.pem/.key; other-ca.pem (unrelated)."""
    require("openssl", "openssl")
    for ca in ("ca", "other-ca"):
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", f"/CN=test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
            cwd=directory,
        )  # fmt: skip
    (directory / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    for name in ("server", "client"):
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr",
            cwd=directory,
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", "san.ext",
            cwd=directory,
        )  # fmt: skip


@pytest.fixture
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A redis-server that speaks only TLS and wants client certificates: (url, certs)."""
    require_module("redis", "redis")
    directory = tmp_path_factory.mktemp("tls")
    _certificates(directory)
    port = free_port()
    argv = [
        require("redis-server", "redis-server"),
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--dir", str(directory), "--save", "", "--daemonize", "no",
        "--tls-cert-file", "server.pem", "--tls-key-file", "server.key",
        "--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "yes",
    ]  # fmt: skip
    server = ServerProcess("redis-tls", argv, port, directory)
    server.start()
    try:
        yield f"rediss://127.0.0.1:{port}/0", directory
    finally:
        server.kill()


def _tls(certs: Path, ca: str = "ca.pem") -> dict[str, Path]:
    return {
        "tls_ca_file": certs / ca,
        "tls_cert_file": certs / "client.pem",
        "tls_key_file": certs / "client.key",
    }


@pytest.mark.anyio
async def test_the_sink_and_the_source_speak_tls_with_a_client_certificate(
    tls_server: tuple[str, Path],
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
    tls_server: tuple[str, Path],
) -> None:
    """The server's certificate does not verify against tls_ca_file: no connection."""
    url, certs = tls_server
    source = ReplaySource(source_config(url, timeout=5.0, **_tls(certs, "other-ca.pem")), "job")
    with pytest.raises(
        BrokerUnavailable, match=r"source\.url: rediss://127\.0\.0\.1:\d+/0"
    ) as raised:
        await source.open(None)
    await source.close()
    assert "certificate verify failed" in str(raised.value)
