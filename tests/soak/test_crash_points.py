"""Crash-point sweep of the snapshot writer: a process killed after each step of
the durable write leaves exactly the old or the new generation, checksum valid,
and no temp file once the store is prepared again. The writer is a subprocess
whose store is given an `on_step` hook that exits (status 70) after the chosen step."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from supervisor.snapshot_store import WRITE_STEPS, SnapshotStore

WRITER = textwrap.dedent(
    """
    import os, sys
    from datetime import UTC, datetime
    from pathlib import Path
    import anyio
    from supervisor.snapshot import Snapshot
    from supervisor.snapshot_store import SnapshotStore
    from supervisor.states import JobState

    directory, crash_at, broken = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "broken"

    def crash(step):
        # The process dies right after `crash_at`: no cleanup, no flush, like a kill.
        if step == crash_at:
            os._exit(70)

    def write_in_place(self, job, data):
        # A writer with no temp file and no previous generation: what the
        # sweep must catch.
        path = self.path_for(job)
        with path.open("r+b") as file:
            file.truncate(0)
            file.write(data[: len(data) // 2])
            file.flush()
            self._on_step("temp_written")
            file.write(data[len(data) // 2 :])
        for step in ("temp_fsynced", "previous_kept", "renamed", "directory_fsynced"):
            self._on_step(step)

    def write_all_in_place(self, writes):
        for job, data in writes:
            write_in_place(self, job, data)
        return [None] * len(writes)

    async def main():
        store = SnapshotStore(directory)
        await store.prepare()
        first = Snapshot(job="j", generation=1, offset=100, state=JobState.RUNNING,
                         written_at=datetime.now(UTC))
        await store.write(first)
        if broken:
            SnapshotStore._write_all = write_all_in_place
        crashing = SnapshotStore(directory, on_step=crash)
        await crashing.load("j")
        await crashing.write(first.successor(offset=200))

    anyio.run(main)
    """
)


def crash_after(step: str, directory: Path, *, broken: bool = False) -> int:
    """Write generation 1, then die after `step` of writing generation 2."""
    result = subprocess.run(
        [sys.executable, "-c", WRITER, str(directory), step, "broken" if broken else "real"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 70, result.stderr
    return result.returncode


def check_old_or_new(directory: Path) -> int:
    """After a restart the snapshot is generation 1 or 2, intact; no temp file is left."""

    async def reopen() -> tuple[int, object]:
        store = SnapshotStore(directory)
        await store.prepare()
        snapshot = await store.load("j")
        assert snapshot is not None
        return snapshot.generation, snapshot.offset

    generation, offset = anyio.run(reopen)
    assert (generation, offset) in ((1, 100), (2, 200))
    assert not [path for path in directory.iterdir() if path.name.endswith(".tmp")]
    return generation


@pytest.mark.parametrize("step", WRITE_STEPS)
def test_a_crash_after_any_step_leaves_the_old_or_the_new_generation(
    tmp_path: Path, step: str
) -> None:
    """Killed after `step`: the snapshot is whole, the old one before the rename, new after."""
    crash_after(step, tmp_path)
    generation = check_old_or_new(tmp_path)
    renamed = WRITE_STEPS.index(step) >= WRITE_STEPS.index("renamed")
    assert generation == (2 if renamed else 1)


def test_the_sweep_catches_a_writer_that_writes_in_place(tmp_path: Path) -> None:
    """Mutation guard: against an in-place writer the same check fails."""
    crash_after("temp_written", tmp_path, broken=True)
    with pytest.raises(Exception, match="corrupt"):
        check_old_or_new(tmp_path)
