"""Plain aio-pika calls for the amqp connector's tests: queues declared, messages
published and counted on the test session's RabbitMQ node (`tests.servers.RabbitServer`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

import aio_pika

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a helper from a synchronous test (one that drives the daemon process)."""
    return asyncio.run(coroutine)


async def declare(
    url: str,
    queue: str,
    *,
    quorum: bool = False,
    dead_letter_exchange: str | None = None,
    exchange: str | None = None,
    routing_key: str = "",
) -> None:
    """A fresh durable queue `queue` (deleted first), bound to `exchange` if given.

    With `dead_letter_exchange`, that fanout exchange and a queue ``QUEUE.dead`` bound
    to it are declared too.
    """
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        arguments: dict[str, Any] = {}
        if quorum:
            arguments["x-queue-type"] = "quorum"
        if dead_letter_exchange is not None:
            dlx = await channel.declare_exchange(
                dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
            )
            await channel.queue_delete(f"{queue}.dead")
            dead = await channel.declare_queue(f"{queue}.dead", durable=True)
            await dead.bind(dlx)
            arguments["x-dead-letter-exchange"] = dead_letter_exchange
        declared = await channel.declare_queue(queue, durable=True, arguments=arguments)
        if exchange is not None:
            found = await channel.declare_exchange(exchange, durable=True)
            await declared.bind(found, routing_key or queue)


async def publish(
    url: str, queue: str, bodies: Iterable[bytes], *, message_ids: bool = False
) -> None:
    """Publish `bodies` to `queue` (default exchange), persistent, confirmed."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        pending: list[Any] = []
        for index, body in enumerate(bodies):
            message = aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=f"m{index}" if message_ids else None,
            )
            pending.append(channel.default_exchange.publish(message, queue))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)


def numbered(count: int, start: int = 0) -> list[bytes]:
    """JSON bodies ``{"seq": n}``."""
    return [json.dumps({"seq": n}).encode() for n in range(start, start + count)]


async def count(url: str, queue: str) -> int:
    """Messages ready in `queue` (not delivered to a consumer)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)


async def take_all(url: str, queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message ready in `queue`, acknowledged."""
    connection = await aio_pika.connect(url)
    taken = []
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        while (message := await declared.get(fail=False)) is not None:
            await message.ack()
            taken.append(message)
    return taken


async def bounce(url: str, queue: str, times: int) -> None:
    """Take the first message of `queue` and return it (nack, requeue) `times` times: a
    quorum queue counts each in its ``x-delivery-count``."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        for _ in range(times):
            message = await declared.get(fail=True)
            assert message is not None
            await message.nack(requeue=True)
