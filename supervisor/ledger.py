"""The one writer of a job's snapshot, and the one owner of its generations.

Both the job's owner (state changes) and its running attempt (checkpoints)
persist through the same `JobLedger`, which numbers each write (the last
generation plus one) and makes the job's calls to the store one at a time under
its one lock, so generations only grow and no write is lost to a race between
the two. The store writes what it is given: it neither counts generations nor
orders calls (`supervisor.snapshot_store`).

Generations only grow, whatever happens: a failed write uses up its generation
(it may have reached the disk); a set-aside goes on from the set-aside
generation; a reload of an older file (an operator's restore) keeps the higher
number.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from supervisor.errors import SnapshotError
from supervisor.protocols import Offset
from supervisor.snapshot import Snapshot
from supervisor.snapshot_store import SnapshotStorage
from supervisor.states import JobState

_NEVER = datetime.fromtimestamp(0, UTC)


class JobLedger:
    """Holds the last durable snapshot of one job and writes its successors."""

    def __init__(self, store: SnapshotStorage, job: str, snapshot: Snapshot | None) -> None:
        self._store = store
        # The one lock ordering this job's calls to the store (write, set-aside, reload).
        # fast_acquire: a checkpoint takes it free almost always; no loop turn for that.
        self._lock = anyio.Lock(fast_acquire=True)
        # Generation 0 is never written: it only seeds the first successor.
        self.snapshot = snapshot or Snapshot(
            job=job, generation=0, offset=None, state=JobState.PENDING, written_at=_NEVER
        )
        self.live_state = self.snapshot.state
        """The job's state now, set by its owner; checkpoints record it."""
        self.live_disabled = self.snapshot.disabled
        """The job is STOPPED because its file says `enabled = false`, set by its owner;
        writes record it, so enabling the job starts it after a daemon restart too."""
        self.live_since: datetime | None = self.snapshot.since
        """When the job entered `live_state` (wall clock), set by its owner; every write
        records it, so SINCE survives a daemon restart."""

    @property
    def path(self) -> Path:
        """Where the snapshot lives (for display)."""
        return self._store.path_for(self.snapshot.job)

    @property
    def offset(self) -> Offset | None:
        """The committed offset: where the next attempt resumes."""
        return self.snapshot.offset

    async def write(self, **changes: Any) -> Snapshot:
        """Durably write the last snapshot with `changes` as the next generation; raises
        SnapshotWriteError.

        Unless `changes` says otherwise, the snapshot records `live_state` and `live_since`,
        and a new offset (a checkpoint) is not one the operator chose. ValueError if
        `changes` names a generation: the ledger numbers them.
        """
        if "generation" in changes:
            raise ValueError(
                f"snapshot of {self.snapshot.job}: the ledger numbers generations "
                "(each the last plus one): generations only grow"
            )
        changes.setdefault("state", self.live_state)
        changes.setdefault("since", self.live_since)
        changes.setdefault("disabled", self.live_disabled and changes["state"] is JobState.STOPPED)
        if "offset" in changes:
            changes.setdefault("offset_chosen", False)
        async with self._lock:
            successor = self.snapshot.successor(**changes)
            try:
                self.snapshot = await self._store.write(successor)
            except SnapshotError:
                # A failed write may still have reached the disk (a rename done, its
                # directory fsync failed): never give another content that generation.
                self.snapshot = replace(self.snapshot, generation=successor.generation)
                raise
            return self.snapshot

    async def set_aside(self, reason: str, *, offset_chosen: bool = False) -> None:
        """Move the snapshot files aside (never deleted) and start from no offset;
        `offset_chosen`: that start is the operator's choice, over a sink's own offset.

        Generations go on from the set-aside one, so they still only grow.
        """
        async with self._lock:
            await self._store.set_aside(self.snapshot.job, reason)
            self.snapshot = replace(
                self.snapshot,
                offset=None,
                attempts=0,
                failure=None,
                next_retry_at=None,
                offset_chosen=offset_chosen,
            )

    async def reload(self) -> None:
        """Read the snapshot from disk again (an operator may have repaired it)."""
        async with self._lock:
            loaded = await self._store.load(self.snapshot.job)
            if loaded is not None:
                # A restored older file must not make generations go backwards.
                generation = max(loaded.generation, self.snapshot.generation)
                self.snapshot = replace(loaded, generation=generation)
