"""The ``stdout`` and ``null`` connectors: two sinks without settings, declared together."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from supervisor.codec import JSON, Codec
from supervisor.codec_choice import codec_for
from supervisor.connectors import Connector, SinkRole
from supervisor.connectors.refusals import ENCODE_ERRORS, RefusesRecords, encode_each
from supervisor.protocols import Offset, Record

if TYPE_CHECKING:
    from supervisor.config.model import JobConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class StdoutSinkConfig:
    """``type = "stdout"``: one JSON document per line on standard output."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NullSinkConfig:
    """``type = "null"``: discard records (benchmarks, dry runs)."""


class StdoutSink(RefusesRecords):
    """One JSON document per line on standard output; flush pushes it out."""

    def __init__(self, *, codec: Codec = JSON) -> None:
        self._pending: list[bytes] = []
        self._encode_lines = codec.dump_lines

    async def open(self) -> Offset | None:
        return None

    async def write(self, records: Sequence[Record]) -> None:
        try:
            self._pending.append(self._encode_lines(records))
        except ENCODE_ERRORS:
            encode_lines = self._encode_lines
            lines, refused = encode_each(records, lambda record: encode_lines([record]))
            await self._refuse(refused)
            self._pending += lines

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


def _stdout(config: StdoutSinkConfig, job: JobConfig) -> StdoutSink:
    return StdoutSink(codec=codec_for(job.codec))


def _null(config: NullSinkConfig, job: JobConfig) -> NullSink:
    return NullSink()


STDOUT = Connector(
    type="stdout",
    doc="One JSON document per line on standard output.",
    sink=SinkRole(config=StdoutSinkConfig, build=_stdout),
)
NULL = Connector(
    type="null",
    doc="Discards every record (benchmarks, dry runs).",
    sink=SinkRole(config=NullSinkConfig, build=_null),
)
