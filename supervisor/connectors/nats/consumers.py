"""The JetStream consumers the source reads through: the replay mode's ephemeral one, and
shared mode's durable one, created if allowed and checked against the job's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from supervisor.connectors.nats.config import NatsSourceConfig
from supervisor.errors import BrokerRefused

if TYPE_CHECKING:
    from supervisor.connectors.nats.connection import Connection

REPLAY_INACTIVE = 3600.0
"""Seconds after which the server deletes a replay consumer nobody pulls from (one left
by a daemon that was killed); a live one is deleted when its attempt closes."""


async def replay_consumer(connection: Connection, config: NatsSourceConfig, start_seq: int) -> str:
    """An ephemeral pull consumer without acks, delivering from `start_seq` on: its name."""
    from nats.js import api

    name = connection.nc._nuid.next().decode()
    consumer = api.ConsumerConfig(
        name=name,
        deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(start_seq, 1),
        ack_policy=api.AckPolicy.NONE,
        filter_subject=config.subject,
        inactive_threshold=REPLAY_INACTIVE,
        mem_storage=True,
        num_replicas=1,
    )
    js = connection.js
    await connection.call(
        js.add_consumer(config.stream, consumer), f'creating a replay consumer on "{config.stream}"'
    )
    return name


def wanted(config: NatsSourceConfig) -> Any:
    """The durable consumer's configuration the job needs."""
    from nats.js import api

    assert config.durable is not None
    return api.ConsumerConfig(
        name=config.durable,
        durable_name=config.durable,
        deliver_policy=(
            api.DeliverPolicy.ALL if config.start == "beginning" else api.DeliverPolicy.NEW
        ),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait,
        # Unlimited: our max_deliveries hands a poison message to the records policy and
        # terminates it; a server limit would drop it silently if we crashed first.
        max_deliver=-1,
        max_ack_pending=config.max_ack_pending,
        filter_subject=config.subject,
    )


def differences(config: NatsSourceConfig, found: Any) -> list[str]:
    """How the existing consumer `found` (its config) differs from what the job needs."""
    from nats.js import api

    problems = []
    if found.deliver_subject:
        problems.append("it is a push consumer (the job needs a pull consumer)")
    if found.ack_policy != api.AckPolicy.EXPLICIT:
        problems.append(f"ack_policy is {_value(found.ack_policy)} (the job needs explicit)")
    if found.ack_wait is not None and abs(found.ack_wait - config.ack_wait) > 1e-3:
        problems.append(f"ack_wait is {found.ack_wait:g} s (source.ack_wait = {config.ack_wait:g})")
    if (found.max_ack_pending or 0) not in (config.max_ack_pending,):
        problems.append(
            f"max_ack_pending is {found.max_ack_pending} (source.max_ack_pending = "
            f"{config.max_ack_pending})"
        )
    limit = found.max_deliver or -1
    if 0 < limit <= config.max_deliveries:
        problems.append(
            f"max_deliver is {limit}: the server would stop delivering a poison message "
            f"before source.max_deliveries = {config.max_deliveries} hands it to the "
            "records policy (use -1 or more than max_deliveries)"
        )
    filtered = found.filter_subject or None
    if filtered != config.subject:
        problems.append(f"filter_subject is {filtered!r} (source.subject = {config.subject!r})")
    return problems


async def ensure_durable(connection: Connection, config: NatsSourceConfig) -> None:
    """The durable consumer exists and fits the job: created if allowed, else refused."""
    import nats.js.errors

    durable = config.durable
    assert durable is not None
    js = connection.js
    where = f'consumer "{config.durable}" of stream "{config.stream}" on {connection.server}'

    async def find() -> Any:
        try:
            return await js.consumer_info(config.stream, durable)
        except nats.js.errors.NotFoundError:
            return None

    info = await connection.call(find(), "reading the consumer's info")
    if info is None:
        if not config.create_consumer:
            raise BrokerRefused(
                f"source.durable: no {where}; create it, or set source.create_consumer = true"
            )
        await connection.call(js.add_consumer(config.stream, wanted(config)), "creating " + where)
        return
    problems = differences(config, info.config)
    if problems:
        raise BrokerRefused(
            f"source.durable: the {where} is configured otherwise than the job needs: "
            + "; ".join(problems)
            + ". Change the job, or the consumer (nats consumer edit / rm)"
        )


def _value(item: Any) -> str:
    return str(getattr(item, "value", item))
