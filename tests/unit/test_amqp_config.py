"""The amqp connector's keys as `supervisor check` sees them: URLs, secrets, prefetch
against the checkpoint policy, and offsets that cannot be set."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from supervisor import secrets
from supervisor.config.loader import load_config
from supervisor.connectors.amqp import CONNECTOR, AmqpSourceConfig
from supervisor.errors import ConfigError
from tests.daemon_process import write_config


def _issues(tmp_path: Path, source: str, checkpoint: str = "") -> list[str]:
    config = write_config(
        tmp_path,
        {
            "orders": f"""
                [source]
                type = "amqp"
                {source}

                [sink]
                type = "null"

                [checkpoint]
                {checkpoint}
            """
        },
    )
    try:
        load_config(config)
    except ConfigError as exc:
        return [f"{issue.where}: {issue.message}" for issue in exc.issues]
    return []


def test_a_plain_source_is_valid(tmp_path: Path) -> None:
    """url and queue are enough; the default prefetch follows checkpoint.every_records."""
    assert _issues(tmp_path, 'url = "amqp://localhost/"\nqueue = "orders"') == []


def test_prefetch_below_every_records_is_refused_as_a_deadlock(tmp_path: Path) -> None:
    """A prefetch below checkpoint.every_records would stall until each interval: refused."""
    issues = _issues(
        tmp_path,
        'url = "amqp://localhost/"\nqueue = "orders"\nprefetch = 500',
        "every_records = 1000",
    )
    assert len(issues) == 1
    assert issues[0].startswith("source.prefetch: prefetch = 500 is below checkpoint.every_records")
    assert "deadlock" in issues[0]


def test_every_records_beyond_the_prefetch_limit_is_refused(tmp_path: Path) -> None:
    """AMQP's prefetch count is 16 bits: every_records above 65535 cannot be covered."""
    issues = _issues(
        tmp_path, 'url = "amqp://localhost/"\nqueue = "orders"', "every_records = 100000"
    )
    assert len(issues) == 1 and issues[0].startswith("source.prefetch: prefetch (default) = 65535")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost/", "expected amqp://host:port/vhost or amqps://"),
        ("amqp:///vhost", "expected amqp://host:port/vhost or amqps://"),
        ("amqp://localhost:99999/", "expected a broker URL"),
        ("amqp://localhost/a/b", "expected amqp://host:port/vhost"),
    ],
)
def test_a_malformed_url_is_refused(tmp_path: Path, url: str, expected: str) -> None:
    """Scheme, host, port and vhost are checked at load."""
    issues = _issues(tmp_path, f'url = "{url}"\nqueue = "orders"')
    assert len(issues) == 1 and issues[0].startswith("source.url: ") and expected in issues[0]


def test_a_password_in_the_url_is_remembered_and_never_shown(tmp_path: Path) -> None:
    """The URL's own password is redacted from then on, even in the error for a bad URL."""
    issues = _issues(tmp_path, 'url = "ftp://me:url-secret-991@localhost/"\nqueue = "q"')
    assert issues and "url-secret-991" not in issues[0]
    assert secrets.redact("x url-secret-991 y") == "x *** y"


def test_two_password_sources_conflict(tmp_path: Path) -> None:
    """At most one of password, password_env, password_file, password_credential."""
    issues = _issues(
        tmp_path,
        'url = "amqp://localhost/"\nqueue = "q"\nuser = "me"\npassword = "pw-1"\n'
        'password_env = "PW"',
    )
    assert issues == ["source.password: set at most one of password, password_env"]


def test_an_offset_cannot_be_set() -> None:
    """The broker owns the position: `offset --set` is refused with what to do instead."""
    role = CONNECTOR.source
    assert role is not None and role.check_offset is not None
    config = AmqpSourceConfig(url="amqp://localhost/", queue="orders")
    with pytest.raises(ValueError, match="no position to set") as caught:
        role.check_offset(config, {"queue": "orders", "consumed": 0})
    assert "purge" in str(caught.value)


@pytest.mark.anyio
async def test_a_job_without_the_extra_fails_saying_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without aio-pika the attempt fails fatally, naming the extra (check still works)."""
    from supervisor.connectors.amqp.source import AmqpSource
    from supervisor.errors import FatalError

    monkeypatch.setitem(sys.modules, "aio_pika", None)
    source = AmqpSource(AmqpSourceConfig(url="amqp://localhost/", queue="q"), "job", 10)
    with pytest.raises(FatalError, match=r"pip install 'stream-supervisor\[amqp\]'"):
        await source.open(None)
    await source.close()
