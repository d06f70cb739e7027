"""The ``nats`` connector: NATS JetStream streams, as a source (replay or shared) and a sink.

This module declares it; the source and sink (`supervisor.connectors.nats.source`,
`.sink`) and the client library (``nats-py``, extra ``[nats]``) are imported only
to run a job, so `supervisor check` works without the extra installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from supervisor import secrets
from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, SinkRole, SourceRole
from supervisor.connectors.nats.config import NatsConnection, NatsSinkConfig, NatsSourceConfig
from supervisor.secrets import SecretRef

if TYPE_CHECKING:
    from supervisor.config.model import CheckpointPolicy, JobConfig
    from supervisor.protocols import Offset, Sink, Source

ACK_WAIT_SHARE = 0.5
"""checkpoint.interval may be at most this share of ack_wait: the rest is the margin for
the flush and the snapshot before the server would deliver the messages again."""


def _build_source(config: NatsSourceConfig, job: JobConfig) -> Source:
    from supervisor.connectors.nats.source import NatsSource

    return NatsSource(config, job.name, codec=codec_for(job.codec))


def _build_sink(config: NatsSinkConfig, job: JobConfig) -> Sink:
    from supervisor.connectors.nats.sink import NatsSink

    return NatsSink(config, job.name, codec=codec_for(job.codec))


def _check_offset(config: NatsSourceConfig, offset: Offset) -> None:
    from supervisor.connectors.nats.source import check_offset

    check_offset(config, offset)


def _connection_problems(config: NatsConnection) -> Iterable[tuple[str, str]]:
    for stem in ("password", "token"):
        problem = secrets.conflicts(SecretRef.of(config, stem))
        if problem:
            yield stem, problem
    if SecretRef.of(config, "password").is_set() and config.user is None:
        yield "password", "a password needs a user: set user too"
    if SecretRef.of(config, "token").is_set() and (
        config.user is not None or SecretRef.of(config, "password").is_set()
    ):
        yield "token", "use either a token or a user and password, not both"
    yield from config.tls_problems()


def _check_source(config: NatsSourceConfig, policy: CheckpointPolicy) -> Iterable[tuple[str, str]]:
    yield from _connection_problems(config)
    if config.durable is None:
        return
    if policy.interval > config.ack_wait * ACK_WAIT_SHARE:
        yield (
            "ack_wait",
            f"checkpoint.interval ({policy.interval:g} s) must be at most half of ack_wait "
            f"({config.ack_wait:g} s): messages are acknowledged at each checkpoint, and "
            "the server would deliver them again before it; raise ack_wait or lower "
            "checkpoint.interval",
        )
    if policy.every_records > config.max_ack_pending:
        yield (
            "max_ack_pending",
            f"max_ack_pending = {config.max_ack_pending} is below checkpoint.every_records "
            f"({policy.every_records}): the server would stop delivering before a "
            "checkpoint is due; raise max_ack_pending or lower checkpoint.every_records",
        )


def _check_sink(config: NatsSinkConfig, policy: CheckpointPolicy) -> Iterable[tuple[str, str]]:
    yield from _connection_problems(config)


CONNECTOR = Connector(
    type="nats",
    doc="NATS JetStream: a stream read by sequence (replay) or through a durable "
    "consumer (shared), or a subject published to.",
    source=SourceRole(
        config=NatsSourceConfig,
        build=_build_source,
        check_offset=_check_offset,
        check_job=_check_source,
    ),
    sink=SinkRole(config=NatsSinkConfig, build=_build_sink, check_job=_check_sink),
)

__all__ = ["CONNECTOR", "NatsSinkConfig", "NatsSourceConfig"]
