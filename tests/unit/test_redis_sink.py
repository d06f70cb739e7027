"""The redis sink against a real redis-server, and the connector's job checks."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from supervisor.codec_choice import codec_for
from supervisor.config.loader import load_config
from supervisor.config.model import CodecName
from supervisor.connectors.redis.entries import fields
from supervisor.connectors.redis.sink import SEND_AT, RedisSink
from supervisor.errors import BrokerUnavailable, ConfigError
from supervisor.secrets import forget_all, redact
from tests.redis_helpers import plain_client, sink_config
from tests.servers import RedisServer, free_port


@pytest.mark.parametrize("codec", ["json", "auto"])
def test_records_become_fields(codec: CodecName) -> None:
    """A dict's str values as they are, others as JSON (NaN as json writes it by default);
    anything else is one data field. The same with either codec."""
    chosen = codec_for(codec)
    record = {"a": "x", "b": 1, "c": {"d": [1, None]}, "e": "é", "f": math.nan, "g": 1e16}
    assert fields(record, chosen) == {
        "a": "x",
        "b": "1",
        "c": '{"d":[1,null]}',
        "e": "é",
        "f": "NaN",
        "g": "1e+16",
    }
    assert fields([1, "two"], chosen) == {"data": '[1,"two"]'}
    assert fields("text", chosen) == {"data": '"text"'}
    assert fields({}, chosen) == {"data": "{}"}


@pytest.mark.anyio
async def test_flush_returns_once_the_server_has_every_entry(redis_server: RedisServer) -> None:
    """Written in pipelines (some sent by write itself), all there when flush returns."""
    sink = RedisSink(sink_config(redis_server.url))
    assert await sink.open() is None
    count = SEND_AT + 10
    await sink.write([{"n": n} for n in range(count)])
    await sink.flush(None)
    entries = plain_client(redis_server.url).xrange("out")
    assert [int(fields["n"]) for _, fields in entries] == list(range(count))
    await sink.close()


@pytest.mark.anyio
async def test_maxlen_trims_the_stream_approximately(redis_server: RedisServer) -> None:
    """maxlen = 100 keeps about 100 entries (MAXLEN ~), never fewer."""
    sink = RedisSink(sink_config(redis_server.url, maxlen=100))
    await sink.open()
    await sink.write([{"n": n} for n in range(2000)])
    await sink.flush(None)
    assert 100 <= plain_client(redis_server.url).xlen("out") < 300
    await sink.close()


@pytest.mark.anyio
async def test_a_sink_without_a_server_is_broker_unavailable() -> None:
    """Nothing listening: BrokerUnavailable naming sink.url."""
    sink = RedisSink(sink_config(f"redis://127.0.0.1:{free_port()}/0", timeout=2.0))
    with pytest.raises(BrokerUnavailable, match=r"sink\.url: redis://127\.0\.0\.1"):
        await sink.open()
    await sink.close()


def _issues(tmp_path: Path, source: str, checkpoint: str = "") -> list[str]:
    (tmp_path / "jobs").mkdir(exist_ok=True)
    (tmp_path / "supervisor.toml").write_text("")
    (tmp_path / "jobs" / "j.toml").write_text(
        textwrap.dedent(source) + '\n[sink]\ntype = "null"\n' + textwrap.dedent(checkpoint)
    )
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "supervisor.toml", environ={})
    return [issue.where + ": " + issue.message for issue in raised.value.issues]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h:1", "expected a redis:// or rediss:// URL"),
        ("redis://h:99999", "Port out of range"),
        ("redis://h:x", "Port could not be cast"),
        ("redis://:1", "with a host name"),
        ("redis://h/db", "database number"),
        ("redis://h?ssl=1", "no ?options"),
    ],
)
def test_a_malformed_url_is_a_configuration_error(tmp_path: Path, url: str, expected: str) -> None:
    """Each malformed URL is named at source.url, saying what was expected."""
    (issue,) = _issues(tmp_path, f'[source]\ntype = "redis"\nstream = "s"\nurl = "{url}"\n')
    assert issue.startswith("source.url: ")
    assert expected in issue


def test_a_password_in_a_malformed_url_is_not_shown(tmp_path: Path) -> None:
    """The URL's password is masked in the error, and remembered for redaction."""
    forget_all()
    (issue,) = _issues(
        tmp_path, '[source]\ntype = "redis"\nstream = "s"\nurl = "redis://:s3cret-pw@h:99999"\n'
    )
    assert "s3cret-pw" not in issue
    assert redact("said s3cret-pw") == "said ***"
    forget_all()


def test_keys_that_do_not_fit_together_are_reported(tmp_path: Path) -> None:
    """Two password sources, TLS keys without rediss://, consumer without group, claim_idle."""
    issues = _issues(
        tmp_path,
        """
        [source]
        type = "redis"
        url = "redis://:pw1@h"
        stream = "s"
        password_env = "PW"
        tls_ca_file = "ca.pem"
        consumer = "c"
        """,
    )
    assert set(issues) == {
        "source.password: the url holds a password too: set only one",
        "source.tls_ca_file: TLS options need a rediss:// url",
        "source.consumer: only for shared mode: set group too, or remove consumer",
    }
    issues = _issues(
        tmp_path,
        """
        [source]
        type = "redis"
        stream = "s"
        group = "g"
        claim_idle = "10s"
        password = "pw2"
        password_file = "pw.txt"
        """,
        '[checkpoint]\ninterval = "6s"\n',
    )
    assert set(issues) == {
        "source.password: set at most one of password, password_file",
        "source.claim_idle: 10s is less than twice checkpoint.interval (6s): entries still "
        "waiting for their checkpoint would be claimed by other consumers and processed "
        "twice; raise claim_idle",
    }


def test_the_declaration_does_not_import_the_client_library() -> None:
    """`supervisor check` works without the [redis] extra: redis is imported only to run."""
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules['redis'] = None\n"  # as if not installed
        "import supervisor.connectors.redis, supervisor.connectors.redis.config\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.anyio
async def test_a_key_that_is_not_a_stream_is_refused_at_flush(redis_server: RedisServer) -> None:
    """WRONGTYPE from the pipeline: BrokerRefused naming sink.stream."""
    from supervisor.errors import BrokerRefused

    plain_client(redis_server.url).set("out", "a string")
    sink = RedisSink(sink_config(redis_server.url))
    await sink.open()
    await sink.write([{"n": 1}])
    with pytest.raises(BrokerRefused, match=r'sink\.stream: the key "out" on redis://.* is not'):
        await sink.flush(None)
    await sink.close()


@pytest.mark.anyio
async def test_a_server_killed_before_flush_is_broker_unavailable(
    redis_server: RedisServer,
) -> None:
    """The connection lost: flush raises BrokerUnavailable (the checkpoint is not written)."""
    sink = RedisSink(sink_config(redis_server.url))
    await sink.open()
    await sink.write([{"n": 1}])
    redis_server.kill()
    with pytest.raises(BrokerUnavailable, match=r"sink\.url: .* is unreachable"):
        await sink.flush(None)
    await sink.close()
