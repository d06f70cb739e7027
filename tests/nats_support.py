"""Helpers for the nats connector's tests: a client of the test's own server, to make
streams, publish, and read back what a sink stored (used by unit, integration and soak)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from tests.servers import NatsServer


async def client(server: NatsServer, **options: Any) -> Any:
    import nats

    async def quiet(_: Exception) -> None:
        return None

    return await nats.connect(
        server.url, allow_reconnect=False, max_reconnect_attempts=1, error_cb=quiet, **options
    )


async def make_stream(server: NatsServer, name: str, subjects: Sequence[str], **extra: Any) -> None:
    nc = await client(server, **extra.pop("auth", {}))
    try:
        await nc.jetstream().add_stream(name=name, subjects=list(subjects), **extra)
    finally:
        await nc.close()


async def publish(
    server: NatsServer, subject: str, payloads: Sequence[bytes | Any], **auth: Any
) -> None:
    """Publish each payload (bytes as they are, anything else as JSON), acks awaited."""
    nc = await client(server, **auth)
    try:
        js = nc.jetstream()
        futures = []
        for item in payloads:
            data = item if isinstance(item, bytes) else json.dumps(item).encode()
            futures.append(await js.publish_async(subject, data))
        await asyncio.gather(*futures)
    finally:
        await nc.close()


async def stream_payloads(server: NatsServer, stream: str) -> list[Any]:
    """Every message of `stream`, in order, each decoded as JSON."""
    from nats.js import api

    nc = await client(server)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        if not total:
            return []
        name = nc._nuid.next().decode()
        await js.add_consumer(
            stream, api.ConsumerConfig(name=name, ack_policy=api.AckPolicy.NONE, mem_storage=True)
        )
        sub = await js.pull_subscribe_bind(name, stream)
        found: list[Any] = []
        while len(found) < total:
            for msg in await sub.fetch(min(4096, total - len(found)), timeout=5):
                found.append(json.loads(msg.data))
        return found
    finally:
        await nc.close()


def run(coroutine: Any) -> Any:
    """Run one of the helpers from synchronous test code (daemon tests)."""
    return asyncio.run(coroutine)
