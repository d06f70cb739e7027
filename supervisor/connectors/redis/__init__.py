"""The ``redis`` connector: Redis Streams as a source (replay or shared mode) and a sink.

This module declares it; the source and sink (`supervisor.connectors.redis.source`,
`.group`, `.sink`) and the client library (`redis`, the ``[redis]`` extra) are
imported only to run a job, so `supervisor check` works without the extra.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from supervisor import secrets
from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, SinkRole, SourceRole
from supervisor.connectors.redis.config import (
    RedisConnectionConfig,
    RedisSinkConfig,
    RedisSourceConfig,
    parse_entry_id,
)

if TYPE_CHECKING:
    from supervisor.config.model import CheckpointPolicy, JobConfig
    from supervisor.protocols import Offset, Sink, Source


def _build_source(config: RedisSourceConfig, job: JobConfig) -> Source:
    if config.group is None:
        from supervisor.connectors.redis.source import ReplaySource

        return ReplaySource(config, job.name)
    from supervisor.connectors.redis.group import GroupSource

    return GroupSource(config, job.name)


def _build_sink(config: RedisSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.redis.sink import RedisSink

    return RedisSink(config, codec=codec_for(job.codec))


def _check_offset(config: RedisSourceConfig, offset: Offset) -> None:
    if config.group is not None:
        raise ValueError(
            "in shared mode (source.group set) the consumer group owns the position: move "
            "it on the server instead, e.g. XGROUP SETID <stream> <group> <entry-id>"
        )
    if parse_entry_id(offset) is None:
        raise ValueError(
            'a redis replay offset is a stream entry ID such as "1700000000000-0" '
            f"(milliseconds-sequence), got {offset!r}"
        )


def _connection_problems(config: RedisConnectionConfig) -> Iterator[tuple[str, str]]:
    ref = secrets.SecretRef.of(config, "password")
    conflict = secrets.conflicts(ref)
    if conflict:
        yield "password", conflict
    elif ref.is_set() and urlsplit(config.url).password:
        yield "password", "the url holds a password too: set only one"
    if not config.url.startswith("rediss://"):
        for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            if getattr(config, key) is not None:
                yield key, "TLS options need a rediss:// url"
    yield from config.tls_problems()


def _check_source(
    config: RedisSourceConfig, checkpoint: CheckpointPolicy
) -> Iterator[tuple[str, str]]:
    yield from _connection_problems(config)
    if config.group is None:
        if config.consumer is not None:
            yield "consumer", "only for shared mode: set group too, or remove consumer"
        return
    if config.claim_idle < 2 * checkpoint.interval:
        yield (
            "claim_idle",
            f"{config.claim_idle:g}s is less than twice checkpoint.interval "
            f"({checkpoint.interval:g}s): entries still waiting for their checkpoint would be "
            "claimed by other consumers and processed twice; raise claim_idle",
        )


def _check_sink(config: RedisSinkConfig, checkpoint: CheckpointPolicy) -> Iterator[tuple[str, str]]:
    yield from _connection_problems(config)


CONNECTOR = Connector(
    type="redis",
    doc="Redis Streams: XREAD / XREADGROUP (consumer groups) as a source, XADD as a sink.",
    source=SourceRole(
        config=RedisSourceConfig,
        build=_build_source,
        check_offset=_check_offset,
        check_job=_check_source,
    ),
    sink=SinkRole(config=RedisSinkConfig, build=_build_sink, check_job=_check_sink),
)

__all__ = ["CONNECTOR", "RedisSinkConfig", "RedisSourceConfig"]
