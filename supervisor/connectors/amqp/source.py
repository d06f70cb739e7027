"""The ``amqp`` source: a RabbitMQ queue read with manual acks, acknowledged at checkpoints.

The broker hands us up to ``prefetch`` messages without an ack (basic.qos). `read`
returns them as records; `commit`, which the attempt calls once the snapshot of a
checkpoint is durable, sends one ``basic.ack`` with ``multiple`` up to the last
delivery tag read, so everything the checkpoint covers is acknowledged at once and
nothing earlier. A crash between the snapshot and the ack leaves those messages
unacknowledged: the broker delivers them again (repeats within one checkpoint).

Delivery tags belong to the channel, and the channel to the attempt: a lost
connection fails the attempt (`BrokerUnavailable`), the broker requeues what it
had delivered, and the next attempt starts clean on a channel of its own.

A message delivered more than ``max_deliveries`` times is poison. Quorum queues
count deliveries in the ``x-delivery-count`` header; on classic queues only the
``redelivered`` flag exists, so we count the redeliveries of each ``message_id`` and
body we see in this process (`RedeliveryCount`; docs/amqp.md says what that misses):
the body too, because producers reuse ids (a business key, or one id for everything)
and a crash's redeliveries of many messages must not add up to one poison message.
A poison message goes to the job's ``[records]`` policy, or (``poison =
"dead_letter_exchange"``) is rejected without requeue at the next commit, so the
queue's dead-letter exchange gets it.

The offset is informational (`{"queue": ..., "consumed": N}`): the broker, not the
snapshot, knows what is left, so ``offset --set`` is refused (`check_offset`).
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from supervisor.codec import JSON, Codec
from supervisor.connectors.amqp import payload
from supervisor.connectors.amqp.config import AmqpSourceConfig
from supervisor.connectors.amqp.connection import Connection
from supervisor.errors import BrokerRefused, BrokerUnavailable
from supervisor.protocols import Batch, Offset, Record, Rejected

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

log = structlog.get_logger("supervisor.source.amqp")

LAG_REFRESH = 1.0
"""Seconds between two looks at the queue's message count while messages flow."""
IDLE_REFRESH = 5.0
"""Seconds between two looks while the queue is empty (an idle read wakes for it)."""
REMEMBERED_REDELIVERIES = 10_000
"""Message ids whose redeliveries a classic queue's source counts (the newest kept)."""


def redelivery_key(message_id: str, body: bytes) -> str:
    """What a classic queue's redeliveries are counted by: the id and the body, as
    producers reuse ids (one for everything, even)."""
    return f"{message_id}\x00{zlib.crc32(body):08x}"


class RedeliveryCount:
    """How often each ``message_id`` came back with the ``redelivered`` flag, in this
    process: the only delivery count a classic queue gives. Kept per job and queue
    across attempts (module-level), bounded to the newest ids."""

    _counts: dict[tuple[str, str], OrderedDict[str, int]] = {}  # noqa: RUF012

    def __init__(self, job: str, queue: str) -> None:
        self._seen = self._counts.setdefault((job, queue), OrderedDict())

    def deliveries(self, message_id: str) -> int:
        """Count one more redelivery of `message_id`; its deliveries so far (at least 2)."""
        count = self._seen.pop(message_id, 0) + 1
        self._seen[message_id] = count
        if len(self._seen) > REMEMBERED_REDELIVERIES:
            self._seen.popitem(last=False)
        return count + 1


class AmqpSource:
    """`supervisor.protocols.Source` for one queue (see the module doc)."""

    replayable = False

    def __init__(
        self, config: AmqpSourceConfig, job: str, prefetch: int, *, codec: Codec = JSON
    ) -> None:
        self._config = config
        self._codec = codec
        self._job = job
        self._prefetch = prefetch
        self._connection = Connection(
            config, "source", f"stream-supervisor {job}", on_lost=self._wake
        )
        self._inbox: deque[DeliveredMessage | None] = deque()
        """Delivered, not read yet; None once the connection is lost."""
        self._arrived = asyncio.Event()
        self._redeliveries = RedeliveryCount(job, config.queue)
        self._consumed = 0
        self._read_upto = 0
        """The last delivery tag read (every tag up to it is settled at the next commit)."""
        self._ack_upto = 0
        """The last delivery tag read that is acknowledged (not a rejected poison message)."""
        self._acked_upto = 0
        self._poison: list[int] = []
        """Delivery tags to reject without requeue at the next commit."""
        self._unacked = 0
        self._lag: int | None = None
        self._lag_at = -math.inf

    @property
    def _where(self) -> str:
        return f'queue "{self._config.queue}" on {self._connection.server}'

    def _offset(self) -> Offset:
        return {"queue": self._config.queue, "consumed": self._consumed}

    async def open(self, offset: Offset | None) -> None:
        if isinstance(offset, dict) and isinstance(offset.get("consumed"), int):
            self._consumed = int(offset["consumed"])  # type: ignore[arg-type]
        await self._connection.open(prefetch=self._prefetch)
        await self._refresh_lag()
        await self._connection.call(
            self._connection.raw.basic_consume(self._config.queue, self._deliver, no_ack=False),
            f"consuming from {self._where}",
        )
        log.info(
            "source.amqp_consuming",
            job=self._job,
            queue=self._config.queue,
            server=self._connection.server,
            prefetch=self._prefetch,
            lag=self._lag,
        )

    async def _deliver(self, message: DeliveredMessage) -> None:
        self._inbox.append(message)
        self._arrived.set()

    def _wake(self) -> None:
        self._inbox.append(None)
        self._arrived.set()

    async def _refresh_lag(self) -> None:
        """The queue's count of ready messages, by a passive declare (which also finds a
        queue deleted under us). Shielded: a stop must not cut an RPC in half."""
        with anyio.CancelScope(shield=True):
            try:
                declared = await self._connection.call(
                    self._connection.raw.queue_declare(self._config.queue, passive=True),
                    f"looking at {self._where}",
                )
            except BrokerRefused as exc:
                if "NOT_FOUND" in str(exc):
                    raise BrokerRefused(f"source.queue: no {self._where}") from None
                raise
        self._lag = int(declared.message_count or 0)
        self._lag_at = anyio.current_time()

    async def read(self, max_records: int, wait: float) -> Batch:
        self._connection.usable()
        deadline = anyio.current_time() + wait
        inbox = self._inbox
        while not inbox:
            now = anyio.current_time()
            if now >= deadline:
                return Batch([], self._offset())
            if now - self._lag_at >= IDLE_REFRESH:
                await self._refresh_lag()
            self._arrived.clear()
            with anyio.move_on_after(min(deadline - now, IDLE_REFRESH)):
                # Waits without taking: a stop cancelling here loses nothing.
                await self._arrived.wait()
        records: list[Record] = []
        rejects: list[Rejected] = []
        taken = 0
        while taken < max_records and inbox:
            message = inbox.popleft()
            if message is None:
                self._connection.usable()  # raises, saying why
                raise BrokerUnavailable(f"source: lost {self._connection.server}")
            taken += 1
            self._take(message, records, rejects)
        self._consumed += taken
        self._unacked += taken
        return Batch(records, self._offset(), rejects=rejects)

    def _take(
        self, message: DeliveredMessage, records: list[Record], rejects: list[Rejected]
    ) -> None:
        delivery: Any = message.delivery
        properties = message.header.properties
        tag = int(delivery.delivery_tag)
        self._read_upto = tag
        deliveries = 1
        if delivery.redelivered:
            headers = properties.headers or {}
            counted = headers.get("x-delivery-count")
            if isinstance(counted, int):
                deliveries = counted + 1
            elif properties.message_id:
                key = redelivery_key(properties.message_id, message.body)
                deliveries = self._redeliveries.deliveries(key)
            else:
                deliveries = 2
        body = message.body
        if deliveries > self._config.max_deliveries:
            error = ValueError(
                f"delivered {deliveries} times, more than source.max_deliveries "
                f"({self._config.max_deliveries}): a poison message"
            )
            if self._config.poison == "dead_letter_exchange":
                self._poison.append(tag)
                log.warning(
                    "source.amqp_poison_rejected",
                    job=self._job,
                    queue=self._config.queue,
                    message_id=properties.message_id,
                    deliveries=deliveries,
                )
                return
            self._ack_upto = tag
            rejects.append(self._rejected(message, error))
            return
        self._ack_upto = tag
        if len(body) > self._config.max_message_bytes:
            error = ValueError(
                f"a message of {len(body)} bytes is larger than source.max_message_bytes "
                f"({self._config.max_message_bytes})"
            )
            rejects.append(self._rejected(message, error))
            return
        try:
            records.append(payload.decode(body, self._config.format, self._codec))
        except ValueError as exc:  # UnicodeDecodeError and json's errors are ValueErrors
            rejects.append(self._rejected(message, exc))

    def _rejected(self, message: DeliveredMessage, error: Exception) -> Rejected:
        delivery: Any = message.delivery
        return payload.rejected(
            message.body,
            self._config.queue,
            message.header.properties.message_id,
            str(delivery.routing_key),
            error,
        )

    async def commit(self, offset: Offset) -> None:
        """Settle every message read so far: poison ones rejected (dead-letter mode), then
        one ``basic.ack`` with ``multiple`` up to the last one acknowledged."""
        self._connection.usable()
        raw = self._connection.raw
        poison, self._poison = self._poison, []
        for tag in poison:
            await self._connection.call(
                raw.basic_reject(tag, requeue=False), f"rejecting a poison message on {self._where}"
            )
        if self._ack_upto > self._acked_upto:
            await self._connection.call(
                raw.basic_ack(self._ack_upto, multiple=True), f"acknowledging on {self._where}"
            )
            self._acked_upto = self._ack_upto
        self._unacked = 0
        if anyio.current_time() - self._lag_at >= LAG_REFRESH:
            await self._refresh_lag()

    def progress(self) -> Mapping[str, object] | None:
        view: dict[str, object] = {
            "queue": self._config.queue,
            "consumed": self._consumed,
            "unacked": self._unacked,
        }
        if self._lag is not None:
            view["lag"] = self._lag
        return view

    async def close(self) -> None:
        # Closing the channel returns every unacknowledged message to the queue.
        await self._connection.close()
