"""Why the workers are the project's own processes: anyio's `to_process` against `WorkerPool`.

The same batches (the JSON orders, 4,096 records each) through the same processor, cut into
one slice per worker and run side by side, by each pool; the time per record is the median
of the batches, the first (the pools' start) left out and reported apart.

Usage: python bench/pool_choice.py [--batches N] [--workers N] [--processor pkg.mod:fn]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` and `supervisor` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import anyio.to_process

from bench.dataset import records_file
from supervisor.config.model import RecordsPolicy
from supervisor.plugins import load_callable
from supervisor.processing import BatchProcessor
from supervisor.workers.pool import WorkerPool

BATCH = 4096


def call_each(reference: str, records: list[Any]) -> list[Any]:
    """What an anyio worker runs: the processor over one slice (imported once per worker)."""
    function = load_callable(reference, "processor")
    return [function(record) for record in records]


async def timed(
    process: Callable[[list[Any]], Awaitable[object]], batches: list[list[Any]]
) -> dict[str, float]:
    per_batch = []
    for batch in batches:
        started = time.perf_counter()
        await process(batch)
        per_batch.append((time.perf_counter() - started) / len(batch) * 1e6)
    return {"first_us": per_batch[0], "us_per_record": statistics.median(per_batch[1:])}


async def compare(reference: str, workers: int, batches: list[list[Any]]) -> dict[str, Any]:
    async def with_anyio(batch: list[Any]) -> list[Any]:
        size = -(-len(batch) // workers)
        parts: list[list[Any]] = [[] for _ in range(workers)]

        async def one(index: int) -> None:
            part = batch[index * size : (index + 1) * size]
            parts[index] = await anyio.to_process.run_sync(call_each, reference, part)

        async with anyio.create_task_group() as group:
            for index in range(workers):
                group.start_soon(one, index)
        return [result for part in parts for result in part]

    pool = WorkerPool("bench", reference, batch=False, workers=workers, search=False)
    processor = BatchProcessor("bench", None, RecordsPolicy(), pool=pool)
    started = time.perf_counter()
    await processor.open()
    opened = time.perf_counter() - started
    try:
        own = await timed(processor.process, batches)
    finally:
        await processor.close()
    return {
        "anyio.to_process": await timed(with_anyio, batches),
        "WorkerPool": own | {"open_ms": opened * 1e3},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--processor", default="bench.plugins:burn")
    args = parser.parse_args()
    data = records_file(Path("/tmp/bench-data"), BATCH * args.batches)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    batches = [records[at : at + BATCH] for at in range(0, len(records), BATCH)]
    print(json.dumps(anyio.run(compare, args.processor, args.workers, batches), indent=1))


if __name__ == "__main__":
    main()
