"""Snapshot writes of many jobs at once: shared worker-thread trips and directory fsyncs,
each job's write still its own."""

from __future__ import annotations

import os
import stat
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from supervisor.errors import SnapshotUnsupported
from supervisor.snapshot import Snapshot, encode, seal
from supervisor.snapshot_store import SnapshotStore
from supervisor.states import JobState

pytestmark = pytest.mark.anyio

JOBS = [f"job{index:02d}" for index in range(40)]


def snap(job: str, generation: int) -> Snapshot:
    return Snapshot(
        job=job,
        generation=generation,
        offset=generation * 10,
        state=JobState.RUNNING,
        written_at=datetime.fromtimestamp(0, UTC),
    )


async def write_all_at_once(store: SnapshotStore, generation: int) -> dict[str, object]:
    """Every job writes `generation` at the same moment; per job, the result or the error."""
    outcomes: dict[str, object] = {}

    async def write(job: str) -> None:
        try:
            outcomes[job] = (await store.write(snap(job, generation))).generation
        except SnapshotUnsupported as exc:
            outcomes[job] = exc

    async with anyio.create_task_group() as tasks:
        for job in JOBS:
            tasks.start_soon(write, job)
    return outcomes


async def test_writes_that_meet_share_directory_fsyncs_and_all_land(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forty jobs writing at once fsync the directory a few times, not forty, and each
    job's new generation, with the one before it kept as prev, is what a fresh store loads."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    await write_all_at_once(store, 1)
    directory_fsyncs = 0
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        nonlocal directory_fsyncs
        directory_fsyncs += stat.S_ISDIR(os.fstat(fd).st_mode)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    assert await write_all_at_once(store, 2) == dict.fromkeys(JOBS, 2)
    assert 1 <= directory_fsyncs <= 5
    fresh = SnapshotStore(store.directory)
    loaded = await fresh.load_many(JOBS)
    assert {job: s.generation for job, s in loaded.items() if isinstance(s, Snapshot)} == (
        dict.fromkeys(JOBS, 2)
    )
    assert all((store.directory / f"{job}.snapshot.prev.toml").exists() for job in JOBS)


async def test_one_jobs_refused_write_leaves_the_rest_of_its_batch_written(
    tmp_path: Path,
) -> None:
    """A job whose write is refused (its file is of a newer format) fails alone; the others
    written in the same batches succeed."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    await write_all_at_once(store, 1)
    document = tomllib.loads(encode(snap("job07", 1)).decode())
    del document["checksum"]
    newer = seal({**document, "format": 3})  # intact, as a newer supervisor would write it
    (store.directory / "job07.snapshot.toml").write_bytes(newer)
    outcomes = await write_all_at_once(store, 2)
    assert isinstance(outcomes.pop("job07"), SnapshotUnsupported)
    assert outcomes == dict.fromkeys(set(JOBS) - {"job07"}, 2)
    assert (store.directory / "job07.snapshot.toml").read_bytes() == newer


async def test_an_offset_toml_cannot_hold_fails_only_its_own_write(tmp_path: Path) -> None:
    """One job's unwritable offset (a plugin source returned a set) is that job's ValueError;
    the jobs whose writes share its batch write theirs."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    outcomes: dict[str, object] = {}

    async def write(job: str) -> None:
        offset: object = {1, 2} if job == "job20" else 7
        snapshot = Snapshot(
            job=job,
            generation=1,
            offset=offset,  # type: ignore[arg-type]  # the point: not an Offset
            state=JobState.RUNNING,
            written_at=datetime.fromtimestamp(0, UTC),
        )
        try:
            outcomes[job] = (await store.write(snapshot)).offset
        except ValueError as exc:
            outcomes[job] = exc

    async with anyio.create_task_group() as tasks:
        for job in JOBS:
            tasks.start_soon(write, job)
    assert isinstance(outcomes.pop("job20"), ValueError)
    assert outcomes == dict.fromkeys(set(JOBS) - {"job20"}, 7)
    assert not (store.directory / "job20.snapshot.toml").exists()
