"""Helpers for the redis connector's tests: configs, a plain client, draining a source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supervisor.connectors.redis.config import RedisSinkConfig, RedisSourceConfig
from supervisor.protocols import Batch, Record, Rejected, Source


def source_config(url: str, **keys: Any) -> RedisSourceConfig:
    return RedisSourceConfig(url=url, **{"stream": "s", **keys})


def sink_config(url: str, **keys: Any) -> RedisSinkConfig:
    return RedisSinkConfig(url=url, **{"stream": "out", **keys})


def plain_client(url: str) -> Any:
    """A synchronous client for setting up and checking a test's stream."""
    import redis

    return redis.Redis.from_url(url, decode_responses=True)


def add(url: str, count: int, stream: str = "s", start: int = 0) -> list[str]:
    """XADD `count` entries ``{"n": str(i)}``; their IDs."""
    client = plain_client(url)
    pipe = client.pipeline(transaction=False)
    for n in range(start, start + count):
        pipe.xadd(stream, {"n": str(n)})
    ids: list[str] = pipe.execute()
    client.close()
    return ids


async def drain(source: Source, *, limit: int = 1000, wait: float = 0.05) -> list[Batch]:
    """Read until a read returns nothing."""
    batches: list[Batch] = []
    while True:
        batch = await source.read(limit, wait)
        if not batch.records and not batch.rejects:
            return batches
        batches.append(batch)


def numbers(batches: list[Batch]) -> list[int]:
    return [int(record["n"]) for batch in batches for record in batch.records]


def rejects(batches: list[Batch]) -> list[Rejected]:
    return [rejected for batch in batches for rejected in batch.rejects]


def records(batches: list[Batch]) -> list[Record]:
    return [record for batch in batches for record in batch.records]


# --- the daemon's side ----------------------------------------------------------------


def job_toml(
    url: str,
    source: str = "",
    *,
    sink: str = 'type = "jsonl"\npath = "../out.jsonl"',
    checkpoint: str = 'every_records = 1000\ninterval = "1s"',
    extra: str = "",
) -> str:
    """A job reading stream ``s`` of `url`; `source` adds keys to its [source]."""
    return (
        f'suspend_on_failure = true\n{extra}\n[source]\ntype = "redis"\nurl = "{url}"\n'
        f'stream = "s"\n{source}\n[sink]\n{sink}\n[checkpoint]\n{checkpoint}\n'
        '[retry]\ninitial = "50ms"\nmax = "300ms"\nmax_attempts = 0\nreset_after = "1s"\n'
    )


def written(path: Any) -> list[int]:
    """The ``n`` of every record in a jsonl sink's file, complete lines only."""
    import json

    file = Path(path)
    if not file.exists():
        return []
    data = file.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].splitlines()
    return [int(json.loads(line)["n"]) for line in lines]


def snapshot_offset(root: Any, job: str) -> Any:
    """The offset in a job's snapshot."""
    import tomllib

    return tomllib.loads((Path(root) / "state" / f"{job}.snapshot.toml").read_text()).get("offset")
