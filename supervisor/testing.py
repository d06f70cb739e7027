"""Test doubles that ship with the package: a scripted source and a recording sink,
and, for load tests of the real daemon, a `SwitchedSource` that fails while a file
exists and a `pad_record` processor.

Use them through `supervisor.components.Components` to drive a job through
failures on cue without touching the real world::

    source = ScriptedSource(count=100, fail_at={50: TransientError("blip")})
    sink = RecordingSink()
    components = Components(source=lambda job: source, sink=lambda job: sink)
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import anyio
import anyio.lowlevel
import anyio.to_thread
import structlog

from supervisor.components import Components
from supervisor.errors import TransientError
from supervisor.protocols import Batch, Offset, Record


@dataclass
class ScriptedSource:
    """Emits ``{"seq": n}`` from the offset; fails on cue.

    - `count`: the source ends after ``count`` records (0: unbounded).
    - `available`: how many records exist so far (None: all of them); a read
      past it waits, like one of a quiet log, until its `wait` is up or news
      arrives (`available` is set, or `fail_next_read`), then returns an empty batch.
    - `fail_at`: a sequence number -> the error raised by the read that would
      return it (consumed: raised once).
    - `open_errors`: each `open` raises the next one, while any are left.
    - `read_errors`: each `read` raises the next one, while any are left. To fail a
      read that is already waiting, use `fail_next_read`.

    Waiting reads are woken by an event, not by looking again every so often: a
    thousand idle fakes then cost nothing between news. Set `available` and call
    `fail_next_read` from the event loop's thread (a portal's `call` from another).
    """

    count: int = 0
    batch: int = 100
    available: int | None = None
    fail_at: dict[int, BaseException] = field(default_factory=dict)
    open_errors: list[BaseException] = field(default_factory=list)
    read_errors: list[BaseException] = field(default_factory=list)
    position: int = 0
    opens: int = 0
    closes: int = 0
    open_now: int = 0
    """Opens not yet closed: more than 1 would mean overlapping attempts."""
    most_open_at_once: int = 0
    _news: anyio.Event | None = field(default=None, init=False, repr=False, compare=False)
    """Set when the script changes; made by the first read that waits (an event needs a loop)."""

    def __setattr__(self, name: str, value: object) -> None:
        super().__setattr__(name, value)
        if name == "available":
            self._wake_readers()

    def fail_next_read(self, error: BaseException) -> None:
        """Queue `error` for the next read, waking a read that is waiting for records."""
        self.read_errors.append(error)
        self._wake_readers()

    def _wake_readers(self) -> None:
        news = getattr(self, "_news", None)  # None while the dataclass is still being built
        if news is not None:
            self._news = None
            news.set()

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
            # Like a followed file with nothing new: wait for news or until `wait` is up.
            if self._news is None:
                self._news = anyio.Event()
            with anyio.move_on_after(wait):
                await self._news.wait()
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


def fixed_components(source: ScriptedSource, sink: RecordingSink) -> Components:
    """Components that hand every attempt the same source and sink objects."""
    return Components(source=lambda _: source, sink=lambda _: sink)


def pad_record(record: Record) -> Record:
    """A processor that makes records wide (adds a 400-character `pad`), for soak tests."""
    return {**record, "pad": "p" * 400}


_switch_log = structlog.get_logger("supervisor.testing")


@dataclass
class _Switch:
    """What one switch file was last seen as, shared by every source watching it."""

    on: bool = False
    checked_at: float = -math.inf
    checking: bool = False


class SwitchedSource:
    """Emits ``{"seq": n}`` from the offset, and fails while the file `switch` exists.

    For failure storms with the real daemon (``type = "python"``,
    ``class = "supervisor.testing:SwitchedSource"``): create the switch file and
    every `open` and `read` raises `TransientError`; remove it and they work
    again. The file is looked at, in a worker thread, at most every
    `check_every` seconds per process, however many sources watch it.

    - `key`: a name for this job's sources (use the job name). Each `open` logs
      ``testing.source_opened`` and each `close` ``testing.source_closed`` with
      it and `open_now`, the number of this key's sources open at once; more
      than one also logs ``testing.source_overlap`` (overlapping attempts).
    - `per_read`, `interval`: `per_read` records become available every
      `interval` seconds; a read waits for them at most its `wait`.
    - `count`: the source ends after `count` records (0: unbounded).
    """

    _switches: ClassVar[dict[str, _Switch]] = {}
    _open_now: ClassVar[dict[str, int]] = {}

    def __init__(
        self,
        switch: str,
        key: str,
        count: int = 0,
        per_read: int = 1,
        interval: float = 1.0,
        check_every: float = 0.1,
    ) -> None:
        self._switch_path = switch
        self._switch = self._switches.setdefault(switch, _Switch())
        self._key = key
        self._count = count
        self._per_read = per_read
        self._interval = interval
        self._check_every = check_every
        self._next = 0
        self._due_at = 0.0
        self._opened = False

    async def open(self, offset: Offset | None) -> None:
        self._opened = True
        open_now = self._open_now[self._key] = self._open_now.get(self._key, 0) + 1
        _switch_log.info("testing.source_opened", key=self._key, open_now=open_now)
        if open_now > 1:
            _switch_log.error("testing.source_overlap", key=self._key, open_now=open_now)
        await self._fail_if_switched_on()
        self._next = offset if isinstance(offset, int) else 0
        self._due_at = anyio.current_time() + self._interval

    async def read(self, max_records: int, wait: float) -> Batch:
        await self._fail_if_switched_on()
        now = anyio.current_time()
        if now < self._due_at:
            await anyio.sleep(min(self._due_at - now, wait))
            if anyio.current_time() < self._due_at:
                return Batch([], self._next)  # nothing yet: the job may checkpoint
        self._due_at = max(self._due_at + self._interval, anyio.current_time())
        end = self._next + min(self._per_read, max_records)
        if self._count:
            end = min(end, self._count)
        records = [{"seq": seq} for seq in range(self._next, end)]
        self._next = end
        return Batch(records, self._next, end=bool(self._count) and end >= self._count)

    async def close(self) -> None:
        if not self._opened:
            return  # the attempt failed before opening us (e.g. its sink did not open)
        self._opened = False
        open_now = self._open_now[self._key] = self._open_now[self._key] - 1
        _switch_log.info("testing.source_closed", key=self._key, open_now=open_now)

    async def _fail_if_switched_on(self) -> None:
        switch = self._switch
        now = anyio.current_time()
        if now - switch.checked_at >= self._check_every and not switch.checking:
            switch.checking = True
            try:
                switch.on = await anyio.to_thread.run_sync(os.path.exists, self._switch_path)
                switch.checked_at = anyio.current_time()
            finally:
                switch.checking = False
        if switch.on:
            raise TransientError(f"switch {self._switch_path} is on")
