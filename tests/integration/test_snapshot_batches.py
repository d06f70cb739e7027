"""Snapshot writes of many jobs at once: shared worker-thread trips and directory fsyncs,
each job's write still its own."""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

import anyio
import pytest

from supervisor.errors import SnapshotUnsupported, SnapshotWriteError
from supervisor.snapshot import FailureRecord, Snapshot, encode, seal
from supervisor.snapshot_store import SnapshotStore
from supervisor.states import JobState
from tests.daemon_process import DaemonProcess, write_config

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


def nested_list(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


async def test_offsets_nested_300_deep_fail_only_their_own_writes(tmp_path: Path) -> None:
    """Two jobs whose plugin sources hand over offsets nested 300 deep each get a ValueError
    of their own; the healthy jobs whose writes share their batches write theirs.

    Issue 13.13: the encoder's RecursionError escaped the batch, failing every write in it
    with one shared exception object."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    deep = {"job05", "job20"}
    outcomes: dict[str, object] = {}

    async def write(job: str) -> None:
        snapshot = Snapshot(
            job=job,
            generation=1,
            offset=nested_list(300) if job in deep else 7,  # type: ignore[arg-type]
            state=JobState.RUNNING,
            written_at=datetime.fromtimestamp(0, UTC),
        )
        try:
            outcomes[job] = (await store.write(snapshot)).offset
        except Exception as exc:  # the point: which error, whose
            outcomes[job] = exc

    async with anyio.create_task_group() as tasks:
        for job in JOBS:
            tasks.start_soon(write, job)
    errors = [outcomes.pop(job) for job in sorted(deep)]
    assert all(type(error) is ValueError for error in errors), errors
    assert all("nested more than 32 deep" in str(error) for error in errors)
    assert errors[0] is not errors[1]
    assert outcomes == dict.fromkeys(set(JOBS) - deep, 7)
    assert not any((store.directory / f"{job}.snapshot.toml").exists() for job in deep)


class BrokenZone(tzinfo):
    """A time zone that cannot say its offset: encoding a time in it raises ArithmeticError."""

    def utcoffset(self, moment: datetime | None) -> timedelta:
        raise ArithmeticError("this zone has no offset")

    def dst(self, moment: datetime | None) -> timedelta | None:
        return None

    def tzname(self, moment: datetime | None) -> str:
        return "broken"


async def test_any_error_encoding_one_snapshot_fails_that_write_alone(tmp_path: Path) -> None:
    """A snapshot whose encoding raises something other than ValueError (here a failure time
    in a broken time zone) fails its own write with a SnapshotWriteError naming its file and
    chained from the cause; the rest of its batch is written."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    outcomes: dict[str, object] = {}
    broken = datetime(2024, 1, 1, tzinfo=BrokenZone())

    async def write(job: str) -> None:
        failure = None
        if job in ("job03", "job30"):
            failure = FailureRecord(
                attempts=1,
                error_type="OSError",
                message="x",
                first_failure_at=broken,
                last_failure_at=broken,
            )
        snapshot = replace(snap(job, 1), state=JobState.SUSPENDED, failure=failure)
        try:
            outcomes[job] = (await store.write(snapshot)).generation
        except SnapshotWriteError as exc:
            outcomes[job] = exc

    async with anyio.create_task_group() as tasks:
        for job in JOBS:
            tasks.start_soon(write, job)
    errors = [outcomes.pop(job) for job in ("job03", "job30")]
    for job, error in zip(("job03", "job30"), errors, strict=True):
        assert isinstance(error, SnapshotWriteError)
        assert f"cannot encode snapshot {store.path_for(job)}" in str(error)
        assert isinstance(error.__cause__, ArithmeticError)
    assert errors[0] is not errors[1]
    assert outcomes == dict.fromkeys(set(JOBS) - {"job03", "job30"}, 1)


DEEP_SOURCE = """\
from supervisor.protocols import Batch


class DeepSource:
    '''One record, then the end, at an offset nested `depth` arrays deep.'''

    def __init__(self, depth: int) -> None:
        self._depth = depth

    async def open(self, offset: object) -> None:
        pass

    async def read(self, max_records: int, wait: float) -> Batch:
        offset: object = 0
        for _ in range(self._depth):
            offset = [offset]
        return Batch([{"n": 1}], offset=offset, end=True)

    async def close(self) -> None:
        pass
"""


def test_the_daemon_outlives_two_jobs_with_offsets_nested_300_deep(tmp_path: Path) -> None:
    """With two plugin sources handing over offsets nested 300 deep (issue 13.13: the daemon
    exited 1), those two jobs fail with the reason and a healthy job finishes and checkpoints;
    the daemon exits 0 when idle."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "deep_offsets.py").write_text(DEEP_SOURCE)
    deep_job = """\
        [source]
        type = "python"
        class = "deep_offsets:DeepSource"
        depth = 300
        [sink]
        type = "null"
        [retry]
        max_attempts = 1
        """
    healthy = """\
        [source]
        type = "python"
        class = "supervisor.examples:CountdownSource"
        start = 5
        [sink]
        type = "null"
        """
    config = write_config(tmp_path, {"deep1": deep_job, "deep2": deep_job, "fine": healthy})
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), *sys.path])}
    daemon = DaemonProcess(config, "--exit-when-idle", env=env)
    assert daemon.finish() == 1  # --exit-when-idle: 1 when a job ended failed
    failed = {
        event["job"]: event
        for event in daemon.events
        if event.get("event") == "job.state_changed" and event.get("to") == "failed"
    }
    assert set(failed) == {"deep1", "deep2"}
    assert all("nested more than 32 deep" in str(event.get("cause")) for event in failed.values())
    snapshot = tomllib.loads((tmp_path / "state" / "fine.snapshot.toml").read_text())
    assert (snapshot["state"], snapshot["offset"]) == ("finished", 0)
