"""The ``amqp`` connector: a RabbitMQ queue as a source, an exchange as a sink.

This module declares it; the source and sink (`supervisor.connectors.amqp.source`,
`.sink`) and the client library (``aio-pika``, extra ``[amqp]``) are imported only
to run a job, so `supervisor check` works without the extra installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from supervisor import secrets
from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, SinkRole, SourceRole
from supervisor.connectors.amqp.config import (
    MAX_PREFETCH,
    AmqpConnection,
    AmqpSinkConfig,
    AmqpSourceConfig,
)
from supervisor.secrets import SecretRef

if TYPE_CHECKING:
    from supervisor.config.model import CheckpointPolicy, JobConfig
    from supervisor.protocols import Offset, Sink, Source


def prefetch_of(config: AmqpSourceConfig, policy: CheckpointPolicy) -> int:
    """The prefetch count the source asks for: the key, or twice checkpoint.every_records."""
    if config.prefetch is not None:
        return config.prefetch
    return min(2 * policy.every_records, MAX_PREFETCH)


def _build_source(config: AmqpSourceConfig, job: JobConfig) -> Source:
    from supervisor.connectors.amqp.source import AmqpSource

    return AmqpSource(
        config, job.name, prefetch_of(config, job.checkpoint), codec=codec_for(job.codec)
    )


def _build_sink(config: AmqpSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.amqp.sink import AmqpSink

    return AmqpSink(config, job.name, codec=codec_for(job.codec))


def check_offset(config: AmqpSourceConfig, offset: Offset) -> None:
    """Refuse every offset: RabbitMQ, not the snapshot, knows what is left to read."""
    raise ValueError(
        f'an amqp source has no position to set: the broker keeps the queue "{config.queue}" '
        "and hands out whatever is not acknowledged yet. To skip messages, purge or move "
        "them on the broker (rabbitmqctl purge_queue, or a shovel), then resume the job"
    )


def _connection_problems(config: AmqpConnection) -> Iterable[tuple[str, str]]:
    problem = secrets.conflicts(SecretRef.of(config, "password"))
    if problem:
        yield "password", problem
    yield from config.tls_problems()
    if config.tls_files_set() and not config.url.startswith("amqps://"):
        yield "url", "TLS files are set but the URL is not amqps://"


def _check_source(config: AmqpSourceConfig, policy: CheckpointPolicy) -> Iterable[tuple[str, str]]:
    yield from _connection_problems(config)
    prefetch = prefetch_of(config, policy)
    if prefetch > MAX_PREFETCH:
        yield "prefetch", f"prefetch = {prefetch} is above AMQP's limit of {MAX_PREFETCH}"
    elif prefetch < policy.every_records:
        key = "prefetch" if config.prefetch is not None else "prefetch (default)"
        yield (
            "prefetch",
            f"{key} = {prefetch} is below checkpoint.every_records ({policy.every_records}): "
            "the broker would stop delivering once that many messages wait for their ack, "
            "and the acks only come at the checkpoint, which would never be due: a "
            "deadlock until checkpoint.interval. Raise prefetch or lower "
            "checkpoint.every_records",
        )


def _check_sink(config: AmqpSinkConfig, policy: CheckpointPolicy) -> Iterable[tuple[str, str]]:
    yield from _connection_problems(config)


CONNECTOR = Connector(
    type="amqp",
    doc="RabbitMQ (AMQP 0-9-1): a queue read with manual acks at each checkpoint, or an "
    "exchange published to with publisher confirms.",
    source=SourceRole(
        config=AmqpSourceConfig,
        build=_build_source,
        check_offset=check_offset,
        check_job=_check_source,
    ),
    sink=SinkRole(config=AmqpSinkConfig, build=_build_sink, check_job=_check_sink),
)

__all__ = ["CONNECTOR", "AmqpSinkConfig", "AmqpSourceConfig"]
