"""Plain aio-pika calls for the amqp connector's tests: queues declared, messages
published and counted on the test session's RabbitMQ node (`tests.servers.RabbitServer`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aio_pika

from tests.daemon_process import DaemonProcess

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


def job(url: str, queue: str, *, every_records: int = 1000, extra: str = "") -> str:
    """A job file: `queue` into ``../out.jsonl``, checkpointing often, retrying fast."""
    return f"""
        [source]
        type = "amqp"
        url = "{url}"
        queue = "{queue}"
        {extra}

        [sink]
        type = "jsonl"
        path = "../out.jsonl"

        [checkpoint]
        every_records = {every_records}
        interval = "200ms"

        [retry]
        initial = "100ms"
        max = "500ms"
        max_attempts = 0
        reset_after = "1s"
    """


def seqs(path: Path) -> list[int]:
    """The ``seq`` of every complete line of a jsonl file (a torn last line is skipped)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].splitlines()
    return [json.loads(line)["seq"] for line in lines]


def wait_until_written(daemon: DaemonProcess, path: Path, count: int, timeout: float = 120) -> None:
    """Block until `path` holds every seq below `count` (checked as the daemon logs, so no
    sleeping); fail after `timeout` or if the daemon exits first."""

    def done() -> bool:
        if not path.exists() or path.stat().st_size < count * 10:
            return False
        return len(set(seqs(path))) >= count

    deadline = time.monotonic() + timeout
    with daemon._logged:
        while not done():
            left = deadline - time.monotonic()
            if daemon._log_ended or left <= 0:
                raise AssertionError(
                    f"{len(set(seqs(path)))} of {count} records written after {timeout} s "
                    f"(daemon exit {daemon.process.poll()}); last events: {daemon.events[-5:]}"
                )
            daemon._logged.wait(min(left, 1.0))


def repeats(values: list[int]) -> int:
    """How many lines repeat an earlier one."""
    return len(values) - len(set(values))


_passed = 0


async def throttle(record: Any) -> Any:
    """A processor (``function = "tests.amqp_broker:throttle"``) that holds a job to about
    10,000 records a second, so a soak test's interruptions land mid-stream."""
    global _passed
    _passed += 1
    if _passed % 20 == 0:
        await asyncio.sleep(0.002)
    return record


THROTTLED = """
        [processor]
        function = "tests.amqp_broker:throttle"
"""


def wait_state(daemon: DaemonProcess, job: str, state: str, timeout: float = 60) -> None:
    """Block until the job's latest logged state change is to `state`."""

    def latest() -> str | None:
        changes = [
            e
            for e in list(daemon.events)
            if e.get("event") == "job.state_changed" and e.get("job") == job
        ]
        return str(changes[-1]["to"]) if changes else None

    with daemon._logged:
        daemon._logged.wait_for(lambda: latest() == state or daemon._log_ended, timeout)
        assert latest() == state, f"{job} is {latest()}, not {state}, after {timeout} s"
