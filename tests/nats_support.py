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


# --- for daemon tests -----------------------------------------------------------------

RETRY_FAST = """
[retry]
initial = "200ms"
max = "1s"
jitter = false
max_attempts = 0
reset_after = "1s"
"""


def nats_job(url: str, source: str = "", *, sink: str = "", checkpoint: str = "") -> str:
    """A job reading stream S of `url` into ../out.jsonl (or `sink`), retrying fast."""
    sink = sink or 'type = "jsonl"\npath = "../out.jsonl"'
    checkpoint = checkpoint or 'every_records = 500\ninterval = "1s"'
    return (
        f'[source]\ntype = "nats"\nurl = "{url}"\nstream = "S"\n{source}\n\n'
        f"[sink]\n{sink}\n\n[checkpoint]\n{checkpoint}\n{RETRY_FAST}"
    )


def wait_until(condition: Any, within: float = 60.0, what: Any = "") -> None:
    """Block until `condition()` holds (re-checked every 50 ms), or fail after `within` s."""
    import time

    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"not true within {within} s: {said or condition}")
        time.sleep(0.05)


def jsonl_records(path: Any) -> list[Any]:
    """The complete lines of a jsonl file, decoded (a line torn by a kill is left out)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.split(b"\n")[:-1] if line]


def seqs(records: Sequence[Any]) -> list[int]:
    return [record["seq"] for record in records if isinstance(record, dict) and "seq" in record]


async def paced(record: Any) -> Any:
    """A processor taking 1 ms a record: slow enough for a test to interrupt a stream."""
    import anyio

    await anyio.sleep(0.001)
    return record


def crash_on_poison(record: Any) -> Any:
    """A processor that kills its daemon on ``{"poison": true}``: a poison message."""
    import os

    if isinstance(record, dict) and record.get("poison"):
        os._exit(3)
    return record
