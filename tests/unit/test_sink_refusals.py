"""Records a sink cannot encode go to the records policy (`reject_with`), their neighbours
written; a sink with no policy attached raises the encoder's error as before
(`supervisor.connectors.refusals`). Real files, a real sqlite database, real servers."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from supervisor.codec import JSON
from supervisor.codec_choice import codec_for, msgspec_installed
from supervisor.connectors.amqp.config import AmqpSinkConfig
from supervisor.connectors.amqp.sink import AmqpSink
from supervisor.connectors.jsonl.config import JsonlSinkConfig
from supervisor.connectors.jsonl.sink import JsonlSink
from supervisor.connectors.nats.sink import NatsSink
from supervisor.connectors.redis.sink import RedisSink
from supervisor.connectors.sqlite.config import SqliteSinkConfig
from supervisor.connectors.sqlite.sink import SqliteSink, table_rows
from supervisor.errors import BrokerRefused
from supervisor.protocols import Record, Rejected
from tests import amqp_broker as broker
from tests import nats_support
from tests.redis_helpers import plain_client
from tests.redis_helpers import sink_config as redis_sink_config
from tests.servers import NatsServer, RabbitServer, RedisServer
from tests.unit.test_nats_connector import sink_config

pytestmark = pytest.mark.anyio

_NO_MSGSPEC = "msgspec is not installed: pip install 'stream-supervisor[fast]'"
CODECS = [
    "json",
    pytest.param("msgspec", marks=pytest.mark.skipif(not msgspec_installed(), reason=_NO_MSGSPEC)),
]

BATCH: list[Record] = [
    {"n": 1},
    {"n": math.nan},
    {"n": 2},
    {"s": "\ud800"},
    {"n": 3},
]
"""Two records JSON output cannot hold (NaN; a lone surrogate, not UTF-8) among good ones."""
GOOD = [{"n": 1}, {"n": 2}, {"n": 3}]


class Judge:
    """Stands in for the records policy: keeps what it is handed."""

    def __init__(self) -> None:
        self.rejected: list[Rejected] = []

    async def __call__(self, rejects: Sequence[Rejected]) -> None:
        self.rejected += rejects


def _errors(judge: Judge) -> list[str]:
    return [f"{type(r.error).__name__}: {r.error}" for r in judge.rejected]


@pytest.mark.parametrize("codec", CODECS)
async def test_jsonl_writes_the_neighbours_and_hands_over_the_rest(
    tmp_path: Path, codec: str
) -> None:
    sink = JsonlSink(JsonlSinkConfig(path=tmp_path / "out.jsonl"), codec=codec_for(codec))  # type: ignore[arg-type]
    judge = Judge()
    sink.reject_with(judge)
    await sink.open()
    try:
        await sink.write(BATCH)
        await sink.flush(5)
    finally:
        await sink.close()
    assert (tmp_path / "out.jsonl").read_text() == '{"n":1}\n{"n":2}\n{"n":3}\n'
    assert [r.raw for r in judge.rejected] == [BATCH[1], BATCH[3]]
    errors = _errors(judge)
    assert errors[0] == "ValueError: Out of range float values are not JSON compliant"
    assert errors[1].startswith("UnicodeEncodeError: ") and "surrogates not allowed" in errors[1]


async def test_jsonl_without_a_policy_raises_the_encoders_error(tmp_path: Path) -> None:
    sink = JsonlSink(JsonlSinkConfig(path=tmp_path / "out.jsonl"))
    await sink.open()
    try:
        with pytest.raises(ValueError, match="Out of range float values"):
            await sink.write(BATCH)
    finally:
        await sink.close()


async def test_a_value_json_cannot_write_is_refused_under_the_json_codec(tmp_path: Path) -> None:
    """A processor's datetime: json's TypeError, a bad record (msgspec would write it: the
    codec's one documented difference)."""
    sink = JsonlSink(JsonlSinkConfig(path=tmp_path / "out.jsonl"), codec=JSON)
    judge = Judge()
    sink.reject_with(judge)
    await sink.open()
    try:
        await sink.write([{"n": 1}, {"at": datetime(2026, 12, 3, tzinfo=UTC)}])
        await sink.flush(2)
    finally:
        await sink.close()
    assert (tmp_path / "out.jsonl").read_text() == '{"n":1}\n'
    assert _errors(judge) == ["TypeError: Object of type datetime is not JSON serializable"]


@pytest.mark.parametrize("codec", CODECS)
async def test_sqlite_commits_the_neighbours_and_hands_over_the_rest(
    tmp_path: Path, codec: str
) -> None:
    path = tmp_path / "out.db"
    sink = SqliteSink(SqliteSinkConfig(path=path), "job", codec=codec_for(codec))  # type: ignore[arg-type]
    judge = Judge()
    sink.reject_with(judge)
    await sink.open()
    try:
        await sink.write(BATCH)
        await sink.flush(5)
    finally:
        await sink.close()
    assert [json.loads(row) for row in table_rows(path)] == GOOD
    assert [r.raw for r in judge.rejected] == [BATCH[1], BATCH[3]]


async def test_nats_publishes_the_neighbours_and_hands_over_the_rest(
    nats_server: NatsServer,
) -> None:
    await nats_support.make_stream(nats_server, "OUT", ["out.>"])
    judge = Judge()
    sink = NatsSink(sink_config(nats_server), "job")
    sink.reject_with(judge)
    await sink.open()
    try:
        await sink.write(BATCH)
        await sink.flush(5)
    finally:
        await sink.close()
    assert await nats_support.stream_payloads(nats_server, "OUT") == GOOD
    assert [r.raw for r in judge.rejected] == [BATCH[1], BATCH[3]]


async def test_nats_without_a_policy_refuses_naming_the_format(nats_server: NatsServer) -> None:
    await nats_support.make_stream(nats_server, "OUT", ["out.>"])
    sink = NatsSink(sink_config(nats_server), "job")
    await sink.open()
    try:
        with pytest.raises(
            BrokerRefused, match=r"sink\.format: a record cannot be published as json"
        ):
            await sink.write(BATCH)
    finally:
        await sink.close()


async def test_amqp_publishes_the_neighbours_and_hands_over_the_rest(
    rabbit_server: RabbitServer,
) -> None:
    queue = "refusals"
    await broker.declare(rabbit_server.url, queue, exchange=f"{queue}-x", routing_key="k")
    judge = Judge()
    sink = AmqpSink(
        AmqpSinkConfig(url=rabbit_server.url, exchange=f"{queue}-x", routing_key="k"), "unit"
    )
    sink.reject_with(judge)
    await sink.open()
    try:
        await sink.write(BATCH)
        await sink.flush({"any": 1})
    finally:
        await sink.close()
    messages = await broker.take_all(rabbit_server.url, queue)
    assert [json.loads(m.body) for m in messages] == GOOD
    assert [r.raw for r in judge.rejected] == [BATCH[1], BATCH[3]]


async def test_redis_adds_the_neighbours_and_hands_over_the_rest(redis_server: RedisServer) -> None:
    """NaN is a field value Redis takes (written ``NaN``, as always); a lone surrogate is not
    UTF-8 and would have failed the whole pipeline of the batch when sent."""
    judge = Judge()
    sink = RedisSink(redis_sink_config(redis_server.url, stream="refusals"))
    sink.reject_with(judge)
    await sink.open()
    try:
        await sink.write(BATCH)
        await sink.flush(5)
    finally:
        await sink.close()
    entries = plain_client(redis_server.url).xrange("refusals")
    assert [fields for _, fields in entries] == [
        {"n": "1"},
        {"n": "NaN"},
        {"n": "2"},
        {"n": "3"},
    ]
    assert [r.raw for r in judge.rejected] == [BATCH[3]]
