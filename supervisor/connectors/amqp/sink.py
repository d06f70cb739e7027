"""The ``amqp`` sink: each record published to an exchange, publisher confirms awaited in
`flush`.

`write` encodes the records and keeps them; `flush` publishes them on a channel in
confirm mode, all in flight at once, and returns once the broker confirmed every
one, so the checkpoint that follows covers only messages the broker took
responsibility for (with ``persistent = true`` and a durable queue: written to
disk, or to a quorum of nodes). A message the exchange routes to no queue comes
back (``mandatory = true``) and fails the job (`BrokerRefused`: a binding is
missing, retrying cannot help); a nack or a lost connection fails the attempt,
which is retried from the last checkpoint: a failed flush repeats records
(at-least-once), it never drops them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any

from supervisor import secrets
from supervisor.codec import JSON, Codec
from supervisor.connectors.amqp import payload
from supervisor.connectors.amqp.config import AmqpSinkConfig
from supervisor.connectors.amqp.connection import Connection, translate
from supervisor.connectors.refusals import ENCODE_ERRORS, RefusesRecords
from supervisor.errors import BrokerRefused, BrokerUnavailable, JobError
from supervisor.protocols import Offset, Record, Rejected


def _ack_type() -> type:
    from aiormq import spec

    return spec.Basic.Ack


class AmqpSink(RefusesRecords):
    """`supervisor.protocols.Sink` publishing to ``exchange`` (see the module doc)."""

    def __init__(self, config: AmqpSinkConfig, job: str, *, codec: Codec = JSON) -> None:
        self._config = config
        self._codec = codec
        self._job = job
        self._connection = Connection(config, "sink", f"stream-supervisor {job}")
        self._pending: list[tuple[bytes, str]] = []
        self._properties: dict[str, Any] = {}

    @property
    def _where(self) -> str:
        name = (
            f'exchange "{self._config.exchange}"'
            if self._config.exchange
            else "the default exchange"
        )
        return f"{name} on {self._connection.server}"

    async def open(self) -> Offset | None:

        await self._connection.open(confirms=True)
        self._properties = {
            "delivery_mode": 2 if self._config.persistent else 1,
            "content_type": payload.CONTENT_TYPES[self._config.format],
        }
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
        codec = self._codec
        refused: list[Rejected] = []
        for record in records:
            try:
                body = payload.encode(record, fmt, codec)
            except ENCODE_ERRORS as exc:
                refused.append(Rejected(record, exc))
                continue
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
        await self._refuse(refused, self._unpublishable)

    def _unpublishable(self, refused: Rejected) -> Exception:
        return BrokerRefused(
            f"sink.format: a record cannot be published as {self._config.format}: {refused.error}"
        )

    async def flush(self, offset: Offset | None) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        self._connection.usable()
        raw = self._connection.raw
        exchange = self._config.exchange
        from aiormq import spec

        make_properties, properties = spec.Basic.Properties, self._properties
        mandatory = self._config.mandatory
        # One task per message, all awaited here: aiormq returns a publish's confirm only
        # from the coroutine that sent it. Plain asyncio tasks, not an anyio task group,
        # for the per-message cost; none outlives this call.
        tasks: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(
                raw.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=key,
                    # Properties of its own, and its own id: aiormq writes a generated
                    # message_id into the properties it is handed, so one shared object
                    # gave every message the first one's id (and a classic queue's source
                    # counts redeliveries by id).
                    properties=make_properties(**properties, message_id=uuid.uuid4().hex),
                    mandatory=mandatory,
                )
            )
            for body, key in pending
        ]
        try:
            await self._confirmed(tasks)
        finally:
            for task in tasks:
                task.cancel()
        for task, (body, key) in zip(tasks, pending, strict=True):
            error = None if task.cancelled() else task.exception()
            if error is not None:
                for rest in tasks:  # retrieved, so asyncio does not log them as lost
                    _ = rest.cancelled() or rest.exception()
                raise self._failure(error, body, key)
            if not isinstance(task.result(), _ack_type()):
                raise BrokerUnavailable(
                    f"sink: {self._where} did not take a message: {task.result()!r}"
                )

    async def _confirmed(self, tasks: list[asyncio.Future[Any]]) -> None:
        """Wait until every publish is confirmed or one failed; `BrokerUnavailable` if none
        progresses for twice `connect_timeout`."""
        timeout = self._config.connect_timeout * 2
        waiting: set[asyncio.Future[Any]] = set(tasks)
        while waiting:
            done, waiting = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
            )
            if not done:
                raise BrokerUnavailable(
                    f"sink: {self._where} confirmed none of {len(waiting)} messages within "
                    f"{timeout:g} s ({self._connection.lost or 'no answer'})"
                )
            if any(task.cancelled() or task.exception() is not None for task in done):
                return

    def _failure(self, error: BaseException, body: bytes, key: str) -> JobError:
        import aiormq.exceptions

        if isinstance(error, asyncio.CancelledError):
            return BrokerUnavailable(
                f"sink: lost {self._connection.server} (publishing): "
                f"{self._connection.lost or 'connection closed'}"
            )
        if isinstance(error, aiormq.exceptions.PublishError):
            return BrokerRefused(
                f"sink.routing_key: {self._where} routes routing key {key!r} to no queue "
                "(the message came back: bind a queue, or set sink.mandatory = false to "
                "let the broker drop such messages)"
            )
        if isinstance(error, aiormq.exceptions.DeliveryError):
            return BrokerUnavailable(f"sink: {self._where} did not take a message (nack)")
        text = str(error)
        if "max size" in text or "message size" in text:
            return BrokerRefused(
                f"sink.exchange: a record of {len(body)} bytes is larger than the broker's "
                f"max_message_size on {self._connection.server}: {secrets.redact(text)}"
            )
        if isinstance(error, aiormq.exceptions.ChannelInvalidStateError):
            return BrokerUnavailable(
                f"sink: lost {self._connection.server} (publishing): "
                f"{self._connection.lost or error}"
            )
        return translate(error, "sink", self._connection.server, doing="publishing")

    async def close(self) -> None:
        self._pending = []
        await self._connection.close()
