"""The ``jsonl`` sink: append one JSON document per line to a file; flush is fsync."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from supervisor.config.model import JsonlSinkConfig
from supervisor.durable import fsync_directory, write_all
from supervisor.protocols import Offset, Record
from supervisor.sinks.encoding import encode_lines

log = structlog.get_logger("supervisor.sink.jsonl")

# Encoded records are handed to the worker thread in chunks this big, so a
# long interval between checkpoints does not hold the whole batch in memory.
_WRITE_THRESHOLD = 1 << 20


class JsonlSink:
    """Appends to `path`. A torn last line left by a crash is cut off on open:
    those records were never checkpointed, so they are replayed anyway."""

    def __init__(self, config: JsonlSinkConfig) -> None:
        self._path = config.path
        self._fd: int | None = None
        self._pending = bytearray()

    async def open(self) -> Offset | None:
        self._fd = await anyio.to_thread.run_sync(_open_for_append, self._path)
        return None

    async def write(self, records: Sequence[Record]) -> None:
        self._pending += encode_lines(records)
        if len(self._pending) >= _WRITE_THRESHOLD:
            await self._drain(sync=False)

    async def flush(self, offset: Offset | None) -> None:
        await self._drain(sync=True)

    async def close(self) -> None:
        fd, self._fd = self._fd, None
        self._pending.clear()
        if fd is not None:
            os.close(fd)

    async def _drain(self, *, sync: bool) -> None:
        fd = self._fd
        if fd is None:
            raise RuntimeError("JsonlSink used before open()")
        data = bytes(self._pending)
        self._pending.clear()
        await anyio.to_thread.run_sync(_write_all, fd, data, sync)


def _open_for_append(path: Path) -> int:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _cut_torn_tail(fd, path)
        if created:
            # The new directory entry must survive a crash along with the data.
            fsync_directory(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _cut_torn_tail(fd: int, path: Path) -> None:
    size = os.fstat(fd).st_size
    if size == 0:
        return
    tail_start = max(0, size - 65536)
    with path.open("rb") as reader:
        while True:
            reader.seek(tail_start)
            tail = reader.read(size - tail_start)
            newline = tail.rfind(b"\n")
            if newline >= 0 or tail_start == 0:
                break
            tail_start = max(0, tail_start - 65536)
    keep = tail_start + newline + 1
    if keep < size:
        os.ftruncate(fd, keep)
        os.fsync(fd)
        log.warning("sink.jsonl.torn_line_removed", path=str(path), bytes=size - keep)


def _write_all(fd: int, data: bytes, sync: bool) -> None:
    write_all(fd, data)
    if sync:
        os.fsync(fd)
