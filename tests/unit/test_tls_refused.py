"""`credentials.tls_refused`: which TLS key a failed handshake blames, however deep a client
library wrapped the `ssl` error (the connectors' tests show it against real servers)."""

from __future__ import annotations

import ssl

import pytest

from supervisor.connectors.credentials import tls_refused


def _wrapped(error: BaseException) -> ConnectionError:
    """As redis-py does: a library error raised while handling the ssl one."""
    try:
        try:
            raise error
        except ssl.SSLError:
            raise ConnectionError("Error connecting to 127.0.0.1:6380") from None
    except ConnectionError as outer:
        outer.__context__ = error
        return outer


@pytest.mark.parametrize(
    ("error", "key"),
    [
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls_ca_file"),
        (_wrapped(ssl.SSLCertVerificationError(1, "certificate verify failed")), "tls_ca_file"),
        (ConnectionError("SSL: CERTIFICATE_VERIFY_FAILED (_ssl.c:1006)"), "tls_ca_file"),
        (
            ConnectionError("SSLError(1, '[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert')"),
            "tls_cert_file",
        ),
        (_wrapped(ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad cert")), "tls_cert_file"),
        (ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca"), "tls_cert_file"),
    ],
)
def test_a_certificate_failure_is_fatal_and_names_its_key(error: BaseException, key: str) -> None:
    refused = tls_refused(error, "source", "amqps://host:5671/", "said")
    assert refused is not None
    assert str(refused).startswith(f"source.{key}: ")
    assert "amqps://host:5671/" in str(refused) and str(refused).endswith(": said")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"),
        TimeoutError(),
        _wrapped(ssl.SSLEOFError(8, "EOF occurred in violation of protocol")),
    ],
)
def test_anything_else_is_not_a_tls_refusal(error: BaseException) -> None:
    assert tls_refused(error, "source", "server", "said") is None


def test_a_cycle_of_causes_ends() -> None:
    first, second = ConnectionError("a"), ConnectionError("b")
    first.__context__, second.__context__ = second, first
    assert tls_refused(first, "sink", "server", "said") is None
