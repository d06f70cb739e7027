"""Slow sinks: a remote store that takes its time to flush or to hang up.

`SlowCloseSink` is for daemon processes (``type = "python"``,
``class = "tests.slow_parts:SlowCloseSink"``); `GatedSink` and `World` are for a
`Supervisor` run in-process on virtual time, whose sinks are held on cue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel

from supervisor.components import Components
from supervisor.config.model import Config, JobConfig
from supervisor.connectors.basic import NullSink
from supervisor.protocols import Offset
from supervisor.testing import RecordingSink, ScriptedSource


class SlowCloseSink(NullSink):
    """Discards records; `close` takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds

    async def close(self) -> None:
        await anyio.sleep(self._seconds)


@dataclass
class GatedSink(RecordingSink):
    """A `RecordingSink` whose `flush` and `close` wait while their gate is closed (a slow
    remote store, on cue), and that counts how many attempts have it open at once.

    One is shared by every attempt of a job, across reloads: `most_open_at_once` above 1
    means two attempts of the job overlapped.
    """

    flush_gate: anyio.Event | None = None
    close_gate: anyio.Event | None = None
    close_seconds: float = 0.0
    """Each `close` also takes this long (after its gate opens)."""
    open_now: int = 0
    most_open_at_once: int = 0
    opens: int = 0
    closes: int = 0
    flushing: bool = False
    closing: bool = False

    async def open(self) -> Offset | None:
        self.opens += 1
        self.open_now += 1
        self.most_open_at_once = max(self.most_open_at_once, self.open_now)
        return await super().open()

    async def flush(self, offset: Offset | None) -> None:
        self.flushing = True
        try:
            if self.flush_gate is not None:
                await self.flush_gate.wait()
            await super().flush(offset)
        finally:
            self.flushing = False

    async def close(self) -> None:
        self.closing = True
        try:
            if self.close_gate is not None:
                await self.close_gate.wait()
            if self.close_seconds:
                await anyio.sleep(self.close_seconds)
            await super().close()
        finally:
            self.closing = False
            self.closes += 1
            self.open_now -= 1


class World:
    """Each job's source and sink, by job name, kept across attempts, reloads and restarts;
    and the configuration a reload reads (`files`)."""

    def __init__(self, config: Config | None = None) -> None:
        self.files = config
        self.sources: dict[str, ScriptedSource] = {}
        self.sinks: dict[str, GatedSink] = {}
        self.components = Components(source=self._source, sink=self._sink)

    def _source(self, job: JobConfig) -> ScriptedSource:
        return self.sources.setdefault(job.name, ScriptedSource(available=0))

    def _sink(self, job: JobConfig) -> GatedSink:
        return self.sinks.setdefault(job.name, GatedSink())

    async def read_config(self, path: Path) -> Config:
        await anyio.lowlevel.checkpoint()
        assert self.files is not None, "World(config) for a daemon that reloads from it"
        return self.files
