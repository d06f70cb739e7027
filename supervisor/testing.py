"""Test doubles that ship with the package: a scripted source and a recording sink.

Use them through `supervisor.components.Components` to drive a job through
failures on cue without touching the real world::

    source = ScriptedSource(count=100, fail_at={50: TransientError("blip")})
    sink = RecordingSink()
    components = Components(source=lambda job: source, sink=lambda job: sink)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from supervisor.protocols import Batch, Offset, Record


@dataclass
class ScriptedSource:
    """Emits ``{"seq": n}`` for n in [offset, count); raises scripted errors on cue.

    `fail_at` maps a sequence number to the error raised by the read that would
    return it (once each: the entry is consumed). `fail_on_open` is raised by the
    next `open`. `batch` bounds each read. `count = 0` means unbounded, and then
    reads with nothing new wait on `release` (set it to let the source continue).
    """

    count: int = 0
    batch: int = 100
    fail_at: dict[int, BaseException] = field(default_factory=dict)
    fail_on_open: BaseException | None = None
    position: int = 0
    opens: int = 0
    closes: int = 0
    open_now: int = 0
    """How many opens have not yet been closed: more than 1 means overlapping attempts."""

    async def open(self, offset: Offset | None) -> None:
        self.opens += 1
        self.open_now += 1
        if self.fail_on_open is not None:
            error, self.fail_on_open = self.fail_on_open, None
            raise error
        self.position = offset if isinstance(offset, int) else 0

    async def read(self, max_records: int, wait: float) -> Batch:
        await anyio.lowlevel.checkpoint()
        end = self.position + min(max_records, self.batch)
        if self.count:
            end = min(end, self.count)
        for seq in range(self.position, end):
            if seq in self.fail_at:
                raise self.fail_at.pop(seq)
        records = [{"seq": seq} for seq in range(self.position, end)]
        self.position = end
        return Batch(records, self.position, end=bool(self.count) and end >= self.count)

    async def close(self) -> None:
        self.closes += 1
        self.open_now -= 1


@dataclass
class RecordingSink:
    """Keeps what it is given; `flushed` holds only what a flush made durable.

    `calls` records the order of operations (``"write"``, ``"flush"``) so tests
    can check that an offset is committed only after a flush. `fail_on_flush`
    is raised by the next flush (and the unflushed records are lost, as with a
    real sink that failed).
    """

    stored_offset: Offset | None = None
    """Set to make the sink behave transactionally: `open` returns it."""
    transactional: bool = False
    fail_on_flush: BaseException | None = None
    written: list[Record] = field(default_factory=list)
    flushed: list[Record] = field(default_factory=list)
    flushed_offsets: list[Offset | None] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    async def open(self) -> Offset | None:
        self.written = []
        return self.stored_offset if self.transactional else None

    async def write(self, records: Sequence[Record]) -> None:
        self.calls.append("write")
        self.written.extend(records)

    async def flush(self, offset: Offset | None) -> None:
        self.calls.append("flush")
        if self.fail_on_flush is not None:
            error, self.fail_on_flush = self.fail_on_flush, None
            self.written = []
            raise error
        self.flushed.extend(self.written)
        self.written = []
        self.flushed_offsets.append(offset)
        if self.transactional:
            self.stored_offset = offset

    async def close(self) -> None:
        self.written = []
