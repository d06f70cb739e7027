"""Test doubles that ship with the package: a scripted source and a recording sink.

Use them through `supervisor.components.Components` to drive a job through
failures on cue without touching the real world::

    source = ScriptedSource(count=100, fail_at={50: TransientError("blip")})
    sink = RecordingSink()
    components = Components(source=lambda job: source, sink=lambda job: sink)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import anyio.lowlevel

from supervisor.components import Components
from supervisor.errors import SnapshotWriteError
from supervisor.protocols import Batch, Offset, Record
from supervisor.snapshot import Snapshot, decode, encode


@dataclass
class ScriptedSource:
    """Emits ``{"seq": n}`` from the offset; fails on cue.

    - `count`: the source ends after ``count`` records (0: unbounded).
    - `available`: how many records exist so far (None: all of them); a read
      past it waits up to `poll_interval` and returns an empty batch, like a quiet log.
    - `fail_at`: a sequence number -> the error raised by the read that would
      return it (consumed: raised once).
    - `open_errors`: each `open` raises the next one, while any are left.
    - `read_errors`: each `read` raises the next one, while any are left.
    """

    count: int = 0
    batch: int = 100
    available: int | None = None
    poll_interval: float = 0.1
    fail_at: dict[int, BaseException] = field(default_factory=dict)
    open_errors: list[BaseException] = field(default_factory=list)
    read_errors: list[BaseException] = field(default_factory=list)
    position: int = 0
    opens: int = 0
    closes: int = 0
    open_now: int = 0
    """Opens not yet closed: more than 1 would mean overlapping attempts."""
    most_open_at_once: int = 0

    async def open(self, offset: Offset | None) -> None:
        self.opens += 1
        self.open_now += 1
        self.most_open_at_once = max(self.most_open_at_once, self.open_now)
        await anyio.lowlevel.checkpoint()
        if self.open_errors:
            raise self.open_errors.pop(0)
        self.position = offset if isinstance(offset, int) else 0

    async def read(self, max_records: int, wait: float) -> Batch:
        await anyio.lowlevel.checkpoint()
        if self.read_errors:
            raise self.read_errors.pop(0)
        end = self.position + min(max_records, self.batch)
        if self.count:
            end = min(end, self.count)
        if self.available is not None:
            end = min(end, self.available)
        if end <= self.position and not (self.count and end >= self.count):
            # Like a followed file: look again every poll_interval until `wait` is up.
            await anyio.sleep(min(wait, self.poll_interval))
            return Batch([], self.position)
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


class InMemorySnapshotStore:
    """A `SnapshotStore` that keeps encoded snapshots in a dict: no disk, no threads.

    It stores the real encoded bytes, so tests can compare them. `fail_writes`
    makes every write raise `SnapshotWriteError` until it is cleared (a disk
    that refuses writes during an outage).
    """

    def __init__(self) -> None:
        self.directory = Path("/in-memory")
        self.files: dict[str, bytes] = {}
        self.set_aside_files: dict[str, bytes] = {}
        self.fail_writes: bool = False
        self.writes = 0

    def path_for(self, job: str) -> Path:
        return self.directory / f"{job}.snapshot.toml"

    async def prepare(self) -> None:
        return None

    async def load(self, job: str) -> Snapshot | None:
        data = self.files.get(job)
        return None if data is None else decode(data, job=job, path=self.path_for(job))

    async def write(self, snapshot: Snapshot) -> Snapshot:
        await anyio.lowlevel.checkpoint()
        if self.fail_writes:
            raise SnapshotWriteError(f"{self.path_for(snapshot.job)}: [Errno 5] Input/output error")
        written = replace(snapshot, written_at=datetime.now(UTC))
        self.files[snapshot.job] = encode(written)
        self.writes += 1
        return written

    async def set_aside(self, job: str, reason: str) -> Path | None:
        data = self.files.pop(job, None)
        if data is None:
            return None
        key = f"{job}.snapshot.{reason}-{len(self.set_aside_files)}.toml"
        self.set_aside_files[key] = data
        return self.directory / key


def fixed_components(source: ScriptedSource, sink: RecordingSink) -> Components:
    """Components that hand every attempt the same source and sink objects."""
    return Components(source=lambda _: source, sink=lambda _: sink)
