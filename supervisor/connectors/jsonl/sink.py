"""The ``jsonl`` sink: append one JSON document per line to a file; flush is fsync."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import anyio
import structlog

from supervisor.codec import JSON, Codec
from supervisor.connectors.jsonl.config import JsonlSinkConfig
from supervisor.connectors.jsonl.torn_line import is_torn_json_line
from supervisor.connectors.refusals import ENCODE_ERRORS, RefusesRecords, encode_each
from supervisor.durable import fsync_directory, write_all
from supervisor.errors import FatalError
from supervisor.protocols import Offset, Record
from supervisor.safe_open import create_or_open

log = structlog.get_logger("supervisor.sink.jsonl")

# Encoded records are handed to the worker thread in chunks this big, so a
# long interval between checkpoints does not hold the whole batch in memory.
_WRITE_THRESHOLD = 1 << 20
_TAIL_CHUNK = 64 * 1024


class JsonlSink(RefusesRecords):
    """Appends to `path`. A torn last line left by a crash is cut off on open:
    those records were never checkpointed, so they are replayed anyway.

    `path` must be a regular file, not a symlink; one it creates is mode 0640."""

    def __init__(self, config: JsonlSinkConfig, *, codec: Codec = JSON) -> None:
        self._path = config.path
        self._encode_lines = codec.dump_lines
        self._fd: int | None = None
        self._pending = bytearray()
        self.bytes_written = 0
        """Bytes appended to the file (shown as `stream_supervisor_bytes_written_total`)."""

    async def open(self) -> Offset | None:
        self._fd = await anyio.to_thread.run_sync(_open_for_append, self._path)
        return None

    async def write(self, records: Sequence[Record]) -> None:
        try:
            self._pending += self._encode_lines(records)
        except ENCODE_ERRORS:
            # A record the format cannot hold: the others are written, it is a bad record.
            encode_lines = self._encode_lines
            lines, refused = encode_each(records, lambda record: encode_lines([record]))
            await self._refuse(refused)
            self._pending += b"".join(lines)
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
        self.bytes_written += len(data)


def _open_for_append(path: Path) -> int:
    # Read and write: the torn tail is read with pread on this same descriptor, so the
    # file judged is the file cut (reopening by path could judge one and cut another).
    fd, created = create_or_open(path, os.O_RDWR | os.O_APPEND, role="sink.path")
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
    """Cut what follows the last newline, if it is what a crash leaves of a line this
    sink writes; refuse a file that ends any other way (it is not this sink's)."""
    size = os.fstat(fd).st_size
    keep = _last_line_end(fd, size)
    if keep == size:
        return
    tail = os.pread(fd, size - keep, keep)
    if not is_torn_json_line(tail):
        raise FatalError(
            f"sink.path {path} ends with {size - keep} bytes after its last newline that are "
            f"not a torn JSON line (what a crash leaves): refused to cut them, since the file "
            f"does not look like this sink's output; point sink.path at a new file, or end "
            f"the file with a newline if it is the right one"
        )
    os.ftruncate(fd, keep)
    os.fsync(fd)
    log.warning("sink.jsonl.torn_line_removed", path=str(path), bytes=size - keep)


def _last_line_end(fd: int, size: int) -> int:
    """The offset just past the file's last newline; 0 if it has none."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        newline = os.pread(fd, end - start, start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


def _write_all(fd: int, data: bytes, sync: bool) -> None:
    write_all(fd, data)
    if sync:
        os.fsync(fd)
