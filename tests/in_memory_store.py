"""An in-memory snapshot store for tests: no disk, no threads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio.lowlevel

from supervisor.errors import SnapshotError, SnapshotWriteError
from supervisor.snapshot import Snapshot, decode, encode


class InMemorySnapshotStore:
    """A `SnapshotStorage` that keeps encoded snapshots in a dict: no disk, no threads.

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

    async def prepare(self, *, lock: bool = False) -> None:
        return None

    def close(self) -> None:
        return None

    async def load(self, job: str) -> Snapshot | None:
        data = self.files.get(job)
        return None if data is None else decode(data, job=job, path=self.path_for(job))

    async def load_many(self, jobs: Sequence[str]) -> dict[str, Snapshot | SnapshotError | None]:
        results: dict[str, Snapshot | SnapshotError | None] = {}
        for job in jobs:
            try:
                results[job] = await self.load(job)
            except SnapshotError as exc:
                results[job] = exc
        return results

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
