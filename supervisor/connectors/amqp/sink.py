"""The ``amqp`` sink: each record published to an exchange, publisher confirms awaited in
`flush`.

`write` encodes the records and keeps them; `flush` publishes them on a channel in
confirm mode, all in flight at once, and returns once the broker confirmed every
one, so the checkpoint that follows covers only messages the broker took
responsibility for (with ``persistent = true`` and a durable queue: written to
disk, or to a quorum of nodes). A message the exchange routes to no queue comes
back (``mandatory = true``) and fails the flush; a nack fails it too. Either way
the attempt is retried from the last checkpoint, so a failed flush repeats
records (at-least-once), it never drops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from supervisor import secrets
from supervisor.connectors.amqp import payload
from supervisor.connectors.amqp.config import AmqpSinkConfig
from supervisor.connectors.amqp.connection import Connection, translate
from supervisor.errors import BrokerRefused, BrokerUnavailable, JobError
from supervisor.protocols import Offset, Record

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel as RawChannel

log = structlog.get_logger("supervisor.sink.amqp")

IN_FLIGHT = 4096
"""Publishes awaiting their confirm at once (the rest wait for a slot)."""


class AmqpSink:
    """`supervisor.protocols.Sink` publishing to ``exchange`` (see the module doc)."""

    def __init__(self, config: AmqpSinkConfig, job: str) -> None:
        self._config = config
        self._job = job
        self._connection = Connection(config, "sink", f"stream-supervisor {job}")
        self._pending: list[tuple[bytes, str]] = []
        self._properties: Any = None

    @property
    def _where(self) -> str:
        name = (
            f'exchange "{self._config.exchange}"'
            if self._config.exchange
            else "the default exchange"
        )
        return f"{name} on {self._connection.server}"

    async def open(self) -> Offset | None:
        from aiormq import spec

        await self._connection.open(confirms=True)
        self._properties = spec.Basic.Properties(
            delivery_mode=2 if self._config.persistent else 1,
            content_type=payload.CONTENT_TYPES[self._config.format],
        )
        if self._config.exchange:
            try:
                await self._connection.call(
                    self._connection.raw.exchange_declare(self._config.exchange, passive=True),
                    f"looking at {self._where}",
                )
            except BrokerRefused as exc:
                if "NOT_FOUND" in str(exc):
                    raise BrokerRefused(f"sink.exchange: no {self._where}") from None
                raise
        return None

    async def write(self, records: Sequence[Record]) -> None:
        fmt = self._config.format
        field = self._config.routing_key_field
        default_key = self._config.routing_key
        pending = self._pending
        for record in records:
            try:
                body = payload.encode(record, fmt)
            except (TypeError, ValueError) as exc:
                raise BrokerRefused(
                    f"sink.format: a record cannot be published as {fmt}: {exc}"
                ) from None
            key = default_key
            if field is not None and isinstance(record, dict):
                chosen = record.get(field)
                if isinstance(chosen, str):
                    if len(chosen.encode()) > 255:
                        raise BrokerRefused(
                            f"sink.routing_key_field: a record's {field!r} is longer than "
                            f"a routing key may be (255 bytes): {chosen[:80]!r}..."
                        )
                    key = chosen
            pending.append((body, key))

    async def flush(self, offset: Offset | None) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        self._connection.usable()
        raw = self._connection.raw
        slots = anyio.Semaphore(IN_FLIGHT)
        failures: list[JobError] = []

        async def publish(body: bytes, key: str) -> None:
            async with slots:
                try:
                    await self._publish(raw, body, key)
                except JobError as exc:
                    # The first failure ends the flush, unwrapped (not an exception group).
                    failures.append(exc)
                    group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            for body, key in pending:
                group.start_soon(publish, body, key)
        if failures:
            raise failures[0]

    async def _publish(self, raw: RawChannel, body: bytes, key: str) -> None:
        import aiormq.exceptions
        from aiormq import spec

        timeout = self._config.connect_timeout * 2
        try:
            with anyio.fail_after(timeout):
                confirm = await raw.basic_publish(
                    body,
                    exchange=self._config.exchange,
                    routing_key=key,
                    properties=self._properties,
                    mandatory=self._config.mandatory,
                )
        except TimeoutError:
            raise BrokerUnavailable(
                f"sink: {self._where} did not confirm a message within {timeout:g} s"
            ) from None
        except aiormq.exceptions.PublishError:
            raise BrokerRefused(
                f"sink.routing_key: {self._where} routes routing key {key!r} to no queue "
                "(the message came back: bind a queue, or set sink.mandatory = false to "
                "let the broker drop such messages)"
            ) from None
        except aiormq.exceptions.DeliveryError as exc:
            raise BrokerUnavailable(
                f"sink: {self._where} did not take a message (nack): {exc}"
            ) from None
        except (
            OSError,
            aiormq.exceptions.AMQPError,
            aiormq.exceptions.ChannelInvalidStateError,
        ) as exc:
            text = str(exc)
            if "max size" in text or "message size" in text:
                raise BrokerRefused(
                    f"sink.exchange: a record of {len(body)} bytes is larger than the broker's "
                    f"max_message_size on {self._connection.server}: {secrets.redact(text)}"
                ) from None
            raise translate(exc, "sink", self._connection.server, doing="publishing") from None
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise BrokerUnavailable(
                f"sink: lost {self._connection.server} (publishing): "
                f"{self._connection.lost or 'connection closed'}"
            ) from None
        if not isinstance(confirm, spec.Basic.Ack):
            raise BrokerUnavailable(f"sink: {self._where} did not take a message: {confirm!r}")

    async def close(self) -> None:
        self._pending = []
        await self._connection.close()
