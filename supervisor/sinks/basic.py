"""The ``stdout`` and ``null`` sinks."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio

from supervisor.protocols import Offset, Record
from supervisor.sinks.encoding import encode_lines


class StdoutSink:
    """One JSON document per line on standard output; flush pushes it out."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []

    async def open(self) -> Offset | None:
        return None

    async def write(self, records: Sequence[Record]) -> None:
        self._pending.append(encode_lines(records))

    async def flush(self, offset: Offset | None) -> None:
        data, self._pending = b"".join(self._pending), []
        # A reader that stops reading the pipe blocks the write: keep that off the loop.
        await anyio.to_thread.run_sync(_write_stdout, data)

    async def close(self) -> None:
        self._pending = []


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


class NullSink:
    """Discards every record."""

    async def open(self) -> Offset | None:
        return None

    async def write(self, records: Sequence[Record]) -> None:
        return None

    async def flush(self, offset: Offset | None) -> None:
        return None

    async def close(self) -> None:
        return None
