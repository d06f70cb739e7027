"""What the benchmark jobs load into the daemon: the JSON processor and a raw-lines sink.

Both do exactly what `bench/baseline.py` does per record, so the two compare
the same work.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from supervisor.durable import write_all
from supervisor.protocols import Offset


def enrich(record: dict[str, Any]) -> dict[str, Any]:
    """The throughput processor: add one field. (The source parses, the sink serialises.)"""
    record["n_items"] = len(record["items"])
    return record


class LineFileSink:
    """Appends each record (a line of text) as it is, one a line; flush is fsync.

    The pass-through workload's sink: lines in, lines out, no JSON anywhere.
    """

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        self._fd: int | None = None
        self._pending: list[str] = []

    async def open(self) -> Offset | None:
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        return None

    async def write(self, records: Sequence[Any]) -> None:
        self._pending.append("\n".join(records))

    async def flush(self, offset: Offset | None) -> None:
        fd = self._fd
        if fd is None:
            raise RuntimeError("LineFileSink used before open()")
        data = ("\n".join(self._pending) + "\n").encode() if self._pending else b""
        self._pending = []
        await anyio.to_thread.run_sync(_write_and_sync, fd, data)

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _write_and_sync(fd: int, data: bytes) -> None:
    write_all(fd, data)
    os.fsync(fd)


def enrich_batch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`enrich` as a batch function: the same work, one call a batch."""
    for record in records:
        record["n_items"] = len(record["items"])
    return records


BURN_LOOPS = 7_000
"""Iterations of `burn`'s loop: about 200 µs of CPU on the project's machine (the workload
measures and reports the actual cost)."""


def burn(record: dict[str, Any]) -> dict[str, Any]:
    """A CPU-bound processor: a pure-Python loop of `BURN_LOOPS`, then `enrich`'s work."""
    total = 0
    for step in range(BURN_LOOPS):
        total += step * step
    record["burn"] = total & 0xFF
    record["n_items"] = len(record["items"])
    return record


def burn_batch(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`burn` as a batch function: the same work, one call a batch."""
    return [burn(record) for record in records]
