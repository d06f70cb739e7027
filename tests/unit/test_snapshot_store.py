"""The snapshot store: durable writes, the previous generation kept, nothing ever lost."""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import stat
import threading
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from structlog.testing import capture_logs

from supervisor import snapshot_files, snapshot_store
from supervisor.errors import (
    SnapshotCorrupt,
    SnapshotError,
    SnapshotUnsupported,
    SnapshotWriteError,
)
from supervisor.ledger import JobLedger
from supervisor.snapshot import Snapshot, decode, encode, seal
from supervisor.snapshot_store import WRITE_STEPS, SnapshotStore
from supervisor.states import JobState
from tests.unit import test_power_loss as power_loss

pytestmark = pytest.mark.anyio

_EPOCH = datetime.fromtimestamp(0, UTC)


def snap(generation: int, offset: Any = None, job: str = "orders") -> Snapshot:
    return Snapshot(
        job=job, generation=generation, offset=offset, state=JobState.RUNNING, written_at=_EPOCH
    )


async def store_with(tmp_path: Path, *generations: int) -> SnapshotStore:
    """A prepared store in tmp_path/state with these generations written (offset = 10 * gen)."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    for generation in generations:
        await store.write(snap(generation, offset=generation * 10))
    return store


def names(store: SnapshotStore) -> set[str]:
    return {path.name for path in store.directory.iterdir()}


def fail_when(
    monkeypatch: pytest.MonkeyPatch, name: str, matches: Callable[..., bool], code: int
) -> None:
    """Make os.<name> raise OSError(code) for calls whose arguments `matches`."""
    real = getattr(os, name)

    def fake(*args: Any, **kwargs: Any) -> Any:
        if matches(*args, **kwargs):
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)


def is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


async def test_write_then_load_round_trips(tmp_path: Path) -> None:
    """What write returns (with written_at filled in) is what load gives back."""
    store = await store_with(tmp_path)
    written = await store.write(snap(1, offset={"file": "a", "pos": 3}))
    assert written.written_at > _EPOCH
    assert await SnapshotStore(store.directory).load("orders") == written
    assert names(store) == {"orders.snapshot.toml"}
    assert stat.S_IMODE(store.path_for("orders").stat().st_mode) == 0o600


async def test_the_previous_generation_is_kept(tmp_path: Path) -> None:
    """After two writes the current file holds the second and prev the first."""
    store = await store_with(tmp_path, 1, 2)
    assert names(store) == {"orders.snapshot.toml", "orders.snapshot.prev.toml"}
    prev = (store.directory / "orders.snapshot.prev.toml").read_bytes()
    assert decode(prev, job="orders", path=Path("prev")).generation == 1


async def test_a_write_after_a_kill_between_keeping_prev_and_renaming_leaves_no_temp(
    tmp_path: Path,
) -> None:
    """Killed after the current file was linked as prev but before the new one replaced it,
    prev and current are one file. The next write's link of current, renamed over prev,
    is then a rename between two links of one file, which POSIX makes a no-op that
    succeeds: the temp link stayed, until the next start (the soak found it after its
    final clean run)."""
    store = await store_with(tmp_path, 1, 2)
    prev = store.directory / "orders.snapshot.prev.toml"
    prev.unlink()
    os.link(store.path_for("orders"), prev)  # what the kill left: prev is current
    again = SnapshotStore(store.directory)
    await again.prepare()
    assert (await again.load("orders")) is not None
    await again.write(snap(3, offset=30))
    assert names(again) == {"orders.snapshot.toml", "orders.snapshot.prev.toml"}
    assert decode(prev.read_bytes(), job="orders", path=prev).generation == 2


async def test_never_checkpointed_loads_none(tmp_path: Path) -> None:
    """A job with no files at all has no snapshot."""
    assert await (await store_with(tmp_path)).load("orders") is None


async def test_load_falls_back_to_prev_and_keeps_the_broken_file(tmp_path: Path) -> None:
    """A corrupt current file is renamed aside (same bytes) and the previous generation used."""
    store = await store_with(tmp_path, 1, 2)
    current = store.path_for("orders")
    damaged = current.read_bytes().replace(b"offset = 20", b"offset = 21")
    current.write_bytes(damaged)
    with capture_logs() as logs:
        loaded = await SnapshotStore(store.directory).load("orders")
    assert loaded is not None
    assert (loaded.generation, loaded.offset) == (1, 10)
    [broken] = [p for p in store.directory.iterdir() if ".broken-" in p.name]
    assert broken.read_bytes() == damaged
    assert not current.exists()
    [event] = [e for e in logs if e["event"] == "snapshot.corrupt"]
    assert event["log_level"] == "error"
    assert event["job"] == "orders"
    assert event["path"] == str(current)
    assert "checksum mismatch" in event["error"]


async def test_load_with_only_the_previous_file(tmp_path: Path) -> None:
    """A crash after the current file was moved leaves prev, which is used."""
    store = await store_with(tmp_path, 1, 2)
    store.path_for("orders").unlink()
    loaded = await SnapshotStore(store.directory).load("orders")
    assert loaded is not None
    assert loaded.generation == 1


async def test_load_with_no_valid_file_names_the_paths_and_moves_nothing(tmp_path: Path) -> None:
    """With the current file corrupt and no prev, load fails naming the path; the file stays."""
    store = await store_with(tmp_path, 1)
    store.path_for("orders").write_bytes(b"garbage")
    with pytest.raises(SnapshotCorrupt, match=str(store.path_for("orders"))):
        await store.load("orders")
    assert names(store) == {"orders.snapshot.toml"}  # the next restart fails the same way


async def test_load_with_both_files_corrupt_names_both(tmp_path: Path) -> None:
    """When prev is corrupt too, the error names both files."""
    store = await store_with(tmp_path, 1, 2)
    prev = store.directory / "orders.snapshot.prev.toml"
    store.path_for("orders").write_bytes(b"")
    prev.write_bytes(b"\xff")
    with pytest.raises(SnapshotCorrupt) as caught:
        await store.load("orders")
    assert str(store.path_for("orders")) in str(caught.value)
    assert str(prev) in str(caught.value)


async def test_a_failed_fsync_leaves_the_current_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from fsync: SnapshotWriteError naming path and errno, no temp file, no change."""
    store = await store_with(tmp_path, 1, 2)
    before = {name: (store.directory / name).read_bytes() for name in names(store)}
    fail_when(monkeypatch, "fsync", lambda fd: True, errno.EIO)
    with pytest.raises(SnapshotWriteError, match="EIO") as caught:
        await store.write(snap(3, offset=30))
    assert str(store.path_for("orders")) in str(caught.value)
    assert {name: (store.directory / name).read_bytes() for name in names(store)} == before


async def test_a_failed_final_rename_leaves_the_current_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.replace failing onto the current file: the error names it; no temp file is left."""
    store = await store_with(tmp_path, 1)
    before = store.path_for("orders").read_bytes()
    fail_when(monkeypatch, "replace", lambda src, dst, **kw: dst == "orders.snapshot.toml", 5)
    with pytest.raises(SnapshotWriteError, match="EIO"):
        await store.write(snap(2))
    assert store.path_for("orders").read_bytes() == before
    assert not [name for name in names(store) if name.endswith(".tmp")]


async def test_a_full_disk_during_the_write_leaves_the_current_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short write followed by ENOSPC fails the write and removes the partial temp file."""
    store = await store_with(tmp_path, 1)
    before = names(store), store.path_for("orders").read_bytes()
    real_write = os.write
    calls: list[int] = []

    def short_then_full(fd: int, data: Any) -> int:
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, bytes(data)[:10])

    monkeypatch.setattr(os, "write", short_then_full)
    with pytest.raises(SnapshotWriteError, match="ENOSPC"):
        await store.write(snap(2, offset="x" * 1000))
    assert (names(store), store.path_for("orders").read_bytes()) == before


async def test_a_write_that_makes_no_progress_is_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.write returning 0 is reported as ENOSPC instead of looping forever."""
    store = await store_with(tmp_path)
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    with pytest.raises(SnapshotWriteError, match="ENOSPC"):
        await store.write(snap(1))
    assert names(store) == set()


async def test_a_failed_directory_fsync_is_reported_and_keeps_prev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename happened but may not survive a power cut: said so; prev still there."""
    store = await store_with(tmp_path, 1)
    fail_when(monkeypatch, "fsync", is_directory, errno.EIO)
    with pytest.raises(SnapshotWriteError, match="power cut"):
        await store.write(snap(2))
    monkeypatch.undo()
    assert names(store) == {"orders.snapshot.toml", "orders.snapshot.prev.toml"}
    loaded = await SnapshotStore(store.directory).load("orders")
    assert loaded is not None
    assert loaded.generation == 2


async def test_a_failed_write_can_be_retried_with_the_same_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store writes the generation it is given, after a failure too: generations are
    its caller's to number (`JobLedger`, tests/unit/test_ledger.py), and the store keeps none."""
    store = await store_with(tmp_path, 1)
    fail_when(monkeypatch, "fsync", lambda fd: True, errno.EIO)
    with pytest.raises(SnapshotWriteError):
        await store.write(snap(2))
    monkeypatch.undo()
    assert (await store.write(snap(2))).generation == 2


async def test_a_call_overlapping_another_of_the_same_job_is_refused(tmp_path: Path) -> None:
    """A job's calls come one at a time from its ledger; one overlapping another of the same
    job is a bug, refused (RuntimeError) rather than run in a second thread on the same
    files. Other jobs are not held up, and the first call completes."""
    release = threading.Event()

    def hold(step: str) -> None:
        if step == "temp_written":
            release.wait()

    store = SnapshotStore(tmp_path / "state", on_step=hold)
    await store.prepare()
    written: list[Snapshot] = []

    async def write_first() -> None:
        written.append(await store.write(snap(1)))

    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(write_first)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(RuntimeError, match="overlapped"):
                await store.write(snap(2))
            with pytest.raises(RuntimeError, match="overlapped"):
                await store.load("orders")
            with pytest.raises(RuntimeError, match="overlapped"):
                await store.load_many(["billing", "orders"])
            with pytest.raises(RuntimeError, match="overlapped"):
                await store.set_aside("orders", "failed")
            assert await store.load("billing") is None
            release.set()
    finally:
        release.set()
    assert [snapshot.generation for snapshot in written] == [1]
    loaded = await store.load("orders")
    assert loaded is not None
    assert loaded.generation == 1


async def test_prepare_removes_only_stale_temp_files(tmp_path: Path) -> None:
    """Temp files of a crashed write are removed and logged; every other file stays."""
    store = await store_with(tmp_path, 1)
    stale = store.directory / ".orders.snapshot.0123456789abcdef.tmp"
    stale.write_bytes(b"half a snapsh")
    keep = {"orders.snapshot.broken-20240101T000000.000000Z.toml", "orders.snapshot.tmp", "x.tmp"}
    for name in keep:
        (store.directory / name).write_bytes(b"keep me")
    with capture_logs() as logs:
        await store.prepare()
    assert names(store) == keep | {"orders.snapshot.toml"}
    assert [e["path"] for e in logs if e["event"] == "snapshot.stale_temp_removed"] == [str(stale)]


async def test_prepare_creates_a_private_directory(tmp_path: Path) -> None:
    """The state directory and its parents are created; the directory itself is 0700."""
    store = SnapshotStore(tmp_path / "a" / "b" / "state")
    await store.prepare()
    assert stat.S_IMODE(store.directory.stat().st_mode) == 0o700


async def test_prepare_makes_the_directories_it_creates_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each directory prepare creates is fsynced into its parent, or a power cut could lose it."""
    synced: list[Path] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(Path(f"/proc/self/fd/{fd}").readlink())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    await SnapshotStore(tmp_path / "a" / "state").prepare()
    assert sorted(synced) == [tmp_path, tmp_path / "a"]
    synced.clear()
    await SnapshotStore(tmp_path / "a" / "state").prepare()
    assert synced == []


@pytest.mark.parametrize("kind", ["symlink", "file"])
async def test_a_state_dir_that_is_not_a_directory_is_refused(tmp_path: Path, kind: str) -> None:
    """A symlink (or a file) at the state directory is refused; nothing is written through it."""
    target = tmp_path / "elsewhere"
    target.mkdir()
    state = tmp_path / "state"
    if kind == "symlink":
        state.symlink_to(target)
    else:
        state.write_bytes(b"")
    store = SnapshotStore(state)
    with pytest.raises(SnapshotError, match=str(state)):
        await store.prepare()
    with pytest.raises(SnapshotWriteError, match="refused"):
        await store.write(snap(1))
    with pytest.raises(SnapshotError, match="refused"):
        await store.load("orders")
    assert list(target.iterdir()) == []


async def test_a_symlink_at_the_temp_path_is_not_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A planted temp symlink is refused (O_EXCL); its target and the link stay as they were."""
    store = await store_with(tmp_path, 1)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    temp = store.directory / ".orders.snapshot.0000000000000000.tmp"
    temp.symlink_to(victim)
    monkeypatch.setattr(snapshot_files, "temp_name", lambda job: temp.name)
    with pytest.raises(SnapshotWriteError, match="EEXIST"):
        await store.write(snap(2))
    assert victim.read_bytes() == b"precious"
    assert temp.is_symlink()
    loaded = await store.load("orders")
    assert loaded is not None
    assert loaded.generation == 1


async def test_a_symlink_at_the_snapshot_path_is_kept_aside_not_followed(tmp_path: Path) -> None:
    """A symlink planted at the current name is never read or written through."""
    store = await store_with(tmp_path, 1, 2)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    store.path_for("orders").unlink()
    store.path_for("orders").symlink_to(victim)
    await store.write(snap(3))
    assert victim.read_bytes() == b"precious"
    [broken] = [p for p in store.directory.iterdir() if ".broken-" in p.name]
    assert broken.is_symlink()
    prev = (store.directory / "orders.snapshot.prev.toml").read_bytes()
    assert decode(prev, job="orders", path=Path("prev")).generation == 1


async def test_writing_over_a_corrupt_file_keeps_it_and_the_good_prev(tmp_path: Path) -> None:
    """A write never rotates a corrupt file into prev or overwrites it: it is kept aside."""
    store = await store_with(tmp_path, 1, 2)
    store.path_for("orders").write_bytes(b"rotten")
    await store.write(snap(3))
    [broken] = [p for p in store.directory.iterdir() if ".broken-" in p.name]
    assert broken.read_bytes() == b"rotten"
    prev = (store.directory / "orders.snapshot.prev.toml").read_bytes()
    assert decode(prev, job="orders", path=Path("prev")).generation == 1


async def test_prev_is_copied_where_hard_links_are_not_supported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without hard links the previous generation is copied instead."""
    store = await store_with(tmp_path, 1)
    fail_when(monkeypatch, "link", lambda *args, **kwargs: True, errno.EPERM)
    await store.write(snap(2))
    prev = (store.directory / "orders.snapshot.prev.toml").read_bytes()
    assert decode(prev, job="orders", path=Path("prev")).generation == 1
    assert not [name for name in names(store) if name.endswith(".tmp")]


async def test_every_step_runs_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No fsync (nor any other step) of a write runs on the event loop's thread."""
    await store_with(tmp_path, 1)
    threads: list[threading.Thread] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        threads.append(threading.current_thread())
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store = SnapshotStore(
        tmp_path / "state", on_step=lambda step: threads.append(threading.current_thread())
    )
    await store.write(snap(2))
    await store.set_aside("orders", "failed")
    assert len(threads) == 2 + len(WRITE_STEPS) + 2  # write: 2 fsyncs; set_aside: 2
    assert threading.main_thread() not in threads


class Crash(Exception):
    """Stands in for the process dying at a step."""


async def test_a_crash_after_any_step_leaves_a_loadable_generation(tmp_path: Path) -> None:
    """Interrupted after each write step, the old or (once renamed) the new generation loads."""
    for number, step in enumerate(WRITE_STEPS):
        directory = tmp_path / step
        directory.mkdir()
        await SnapshotStore(directory).write(snap(1))

        def crash(reached: str, at: str = step) -> None:
            if reached == at:
                raise Crash(at)

        # Each write of a batch that raised gets its own error, chained from the cause.
        with pytest.raises(SnapshotWriteError) as caught:
            await SnapshotStore(directory, on_step=crash).write(snap(2))
        assert isinstance(caught.value.__cause__, Crash)
        loaded = await SnapshotStore(directory).load("orders")
        assert loaded is not None
        renamed = number >= WRITE_STEPS.index("renamed")
        assert loaded.generation == (2 if renamed else 1)


async def test_set_aside_renames_both_files_and_deletes_nothing(tmp_path: Path) -> None:
    """A FAILED job started afresh: both files move aside with their bytes; load is then None."""
    store = await store_with(tmp_path, 1, 2)
    before = sorted((store.directory / name).read_bytes() for name in names(store))
    moved = await store.set_aside("orders", "failed")
    assert moved is not None
    assert moved.name.startswith("orders.snapshot.failed-")
    assert sorted(p.read_bytes() for p in store.directory.iterdir()) == before
    assert await store.load("orders") is None
    assert await store.set_aside("orders", "failed") is None
    await store.write(snap(3))  # generations go on from the set-aside ones


@pytest.mark.parametrize("job", ["../etc", "a/b", "", "Orders", ".hidden", "x" * 64])
async def test_unsafe_job_names_are_refused(tmp_path: Path, job: str) -> None:
    """A name that could leave the directory (or is not a job name) is a ValueError."""
    store = await store_with(tmp_path)
    with pytest.raises(ValueError, match="job name"):
        store.path_for(job)
    with pytest.raises(ValueError, match="job name"):
        await store.load(job)
    with pytest.raises(ValueError, match="job name"):
        await store.write(snap(1, job=job))
    with pytest.raises(ValueError):
        await store.set_aside("orders", "../x")


async def test_a_newer_format_prev_beside_a_valid_current_is_left_to_rotate_out(
    tmp_path: Path,
) -> None:
    """Only the current file decides: a newer-format prev is neither an error nor set aside."""
    store = await store_with(tmp_path, 1, 2)
    prev = store.directory / "orders.snapshot.prev.toml"
    document = tomllib.loads(prev.read_text())
    del document["checksum"]
    prev.write_bytes(seal({**document, "format": 3}))
    loaded = await SnapshotStore(store.directory).load("orders")
    assert loaded is not None
    assert loaded.generation == 2
    assert names(store) == {"orders.snapshot.toml", "orders.snapshot.prev.toml"}


def counting_decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the name of every file the store decodes from now on."""
    calls: list[str] = []

    def counting(data: bytes, *, job: str, path: Path) -> Snapshot:
        calls.append(path.name)
        return decode(data, job=job, path=path)

    monkeypatch.setattr(snapshot_store, "decode", counting)
    return calls


async def test_a_write_does_not_decode_what_this_store_wrote_or_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The current file, still holding the bytes this store wrote or loaded, is kept as prev
    without being decoded again; prev is decoded once, by a store's first write."""
    current, prev = "orders.snapshot.toml", "orders.snapshot.prev.toml"
    store = await store_with(tmp_path, 1)
    decodes = counting_decodes(monkeypatch)
    await store.write(snap(2))
    await store.write(snap(3))
    assert decodes == []
    await SnapshotStore(store.directory).write(snap(4))
    assert decodes == [prev, current]
    loaded = SnapshotStore(store.directory)
    await loaded.load("orders")
    assert decodes[2:] == [current]
    await loaded.write(snap(5))
    await loaded.write(snap(6))
    assert decodes[3:] == [prev]
    kept = (store.directory / prev).read_bytes()
    assert decode(kept, job="orders", path=Path("prev")).generation == 5


async def test_a_corrupt_prev_beside_a_valid_current_is_kept_aside_by_the_next_write(
    tmp_path: Path,
) -> None:
    """Load reads only a valid current file; the first write then finds the corrupt prev
    and moves it aside (same bytes, reported) instead of replacing it."""
    store = await store_with(tmp_path, 1, 2)
    prev = store.directory / "orders.snapshot.prev.toml"
    prev.write_bytes(b"rotten")
    fresh = SnapshotStore(store.directory)
    with capture_logs() as logs:
        loaded = await fresh.load("orders")
        assert loaded is not None
        assert loaded.generation == 2
        assert prev.read_bytes() == b"rotten"
        await fresh.write(snap(3))
    [broken] = [p for p in store.directory.iterdir() if ".broken-" in p.name]
    assert broken.read_bytes() == b"rotten"
    assert [e["path"] for e in logs if e["event"] == "snapshot.corrupt"] == [str(prev)]
    assert decode(prev.read_bytes(), job="orders", path=prev).generation == 2


async def test_a_file_changed_in_place_behind_the_store_is_checked_in_full(
    tmp_path: Path,
) -> None:
    """Damage keeping the inode, the size and the mtime is still caught before a write
    rotates it into prev: it is kept aside and the good prev stays."""
    store = await store_with(tmp_path, 1, 2)
    current = store.path_for("orders")
    before = current.stat()
    damaged = current.read_bytes().replace(b"offset = 20", b"offset = 21")
    with current.open("r+b") as file:  # in place: same inode
        file.write(damaged)
    os.utime(current, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = current.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    with capture_logs() as logs:
        await store.write(snap(3))
    [broken] = [p for p in store.directory.iterdir() if ".broken-" in p.name]
    assert broken.read_bytes() == damaged
    assert "checksum mismatch" in next(e for e in logs if e["event"] == "snapshot.corrupt")["error"]
    prev = (store.directory / "orders.snapshot.prev.toml").read_bytes()
    assert decode(prev, job="orders", path=Path("prev")).generation == 1


def test_a_write_trusting_the_current_file_is_as_safe_under_every_power_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the current file trusted (loaded first, not decoded by the write), every power cut
    during the write still leaves the old or the new generation."""
    warm = SnapshotStore(tmp_path / "state")
    decodes: list[list[str]] = []

    def write(store: SnapshotStore, job: str, data: bytes) -> None:
        assert warm._load(job) is not None  # only reads: nothing for the model to record
        decodes.append(counting_decodes(monkeypatch))
        warm._write(job, data)

    points, old = power_loss.record_write(tmp_path / "state", 2, write)
    assert decodes == [["orders.snapshot.prev.toml"]]  # the current file is not decoded
    problems, _ = power_loss.check(tmp_path / "cuts", points, old, power_loss.snap(3))
    assert problems == []


def build_mixed_state(state: Path) -> list[str]:
    """A state directory holding each kind of job `load` tells apart; the jobs, in order."""
    state.mkdir(mode=0o700)
    current = "{}.snapshot.toml".format
    prev = "{}.snapshot.prev.toml".format
    for job, generations in [("good", 2), ("fallback", 2), ("lost", 1), ("both", 2), ("newer", 2)]:
        for generation in range(1, generations + 1):
            if generation > 1:
                (state / prev(job)).write_bytes((state / current(job)).read_bytes())
            (state / current(job)).write_bytes(encode(snap(generation, offset=generation, job=job)))
    (state / current("fallback")).write_bytes(b"offset = 'damaged'")
    (state / current("lost")).write_bytes(b"")
    (state / current("both")).write_bytes(b"\xff")
    (state / prev("both")).write_bytes(b"garbage")
    document = tomllib.loads((state / current("newer")).read_text())
    del document["checksum"]
    (state / current("newer")).write_bytes(seal({**document, "format": 3}))
    (state / prev("prev-only")).write_bytes(encode(snap(4, job="prev-only")))
    return ["good", "missing", "fallback", "lost", "both", "newer", "prev-only"]


def outcome(result: Snapshot | BaseException | None) -> object:
    return (type(result), str(result)) if isinstance(result, BaseException) else result


def listing(state: Path) -> list[tuple[str, bytes]]:
    """Names (set-aside times masked) and bytes of every file."""
    masked = (re.sub(r"-\d{8}T[\d.]+Z", "-<UTC>", p.name) for p in sorted(state.iterdir()))
    return sorted(zip(masked, (p.read_bytes() for p in sorted(state.iterdir())), strict=True))


async def test_load_many_gives_what_each_load_gives(tmp_path: Path) -> None:
    """For valid, missing, corrupt (with a valid, corrupt or no prev) and newer-format jobs,
    load_many returns each job's snapshot or error and leaves the files as loads one by one do."""
    state = tmp_path / "state"
    jobs = build_mixed_state(state)
    one_by_one: dict[str, object] = {}
    store = SnapshotStore(state)
    for job in jobs:
        try:
            one_by_one[job] = outcome(await store.load(job))
        except SnapshotError as exc:
            one_by_one[job] = outcome(exc)
    after_loads = listing(state)
    shutil.rmtree(state)
    build_mixed_state(state)
    many = SnapshotStore(state)
    results = await many.load_many(jobs)
    assert list(results) == jobs
    assert {job: outcome(result) for job, result in results.items()} == one_by_one
    assert listing(state) == after_loads
    assert isinstance(results["lost"], SnapshotCorrupt)
    assert isinstance(results["newer"], SnapshotUnsupported)
    assert [job for job, result in results.items() if isinstance(result, Snapshot)] == [
        "good",
        "fallback",
        "prev-only",
    ]
    good = results["good"]
    assert isinstance(good, Snapshot)
    # The daemon builds each job's ledger from what load_many gave: it writes on from there.
    assert (await JobLedger(many, "good", good).write()).generation == good.generation + 1


async def test_load_many_in_a_refused_directory_gives_each_job_the_refusal(tmp_path: Path) -> None:
    """An unsafe state directory fails every job's load alike, each with its own error."""
    store = await store_with(tmp_path, 1)
    store.directory.chmod(0o770)
    with pytest.raises(SnapshotError) as single:
        await store.load("orders")
    results = await store.load_many(["orders", "billing"])
    assert [outcome(result) for result in results.values()] == [outcome(single.value)] * 2
    assert results["orders"] is not results["billing"]


async def test_load_many_refuses_an_unsafe_job_name_before_reading(tmp_path: Path) -> None:
    """A name that could leave the directory is a ValueError, as for load."""
    store = await store_with(tmp_path, 1)
    with pytest.raises(ValueError, match="job name"):
        await store.load_many(["orders", "../etc"])


async def test_checkpoints_go_on_when_sources_hold_every_default_worker_thread(
    tmp_path: Path,
) -> None:
    """With all of anyio's default worker threads blocked (issue 13.3: 40 sources stuck
    opening FIFOs), a snapshot write and a load still complete: the store has threads of
    its own."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    release = threading.Event()
    default = anyio.to_thread.current_default_thread_limiter()
    checkpointed = anyio.Event()
    results: list[Snapshot | None] = []

    async def checkpoint() -> None:
        results.append(await store.write(snap(1, offset=7)))
        results.append(await SnapshotStore(store.directory).load("orders"))
        checkpointed.set()

    try:
        async with anyio.create_task_group() as tasks:
            for _ in range(int(default.total_tokens)):
                tasks.start_soon(functools.partial(anyio.to_thread.run_sync, release.wait))
            await anyio.wait_all_tasks_blocked()
            assert default.borrowed_tokens == default.total_tokens
            tasks.start_soon(checkpoint)
            # A guard, not a wait: the checkpoint is done in milliseconds, or never while
            # the threads are held (a write cannot be cancelled: it is shielded).
            with anyio.move_on_after(30):
                await checkpointed.wait()
            done_while_held = checkpointed.is_set()
            release.set()
    finally:
        release.set()
    assert done_while_held
    assert results[0] == results[1]
