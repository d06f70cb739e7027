"""Power cuts during a snapshot write, enumerated with the model in tests/crash_model.py.

After every os call of `SnapshotStore._write`, every directory a power cut could
leave is built for real and loaded: it must hold exactly the old or the new
generation, checksum valid, with no corrupt file met and no temp file left
after `prepare`; once the write has returned, only the new one. Mutation
guards: the same check fails against writers that skip the temp file's fsync,
rename before it, or skip the directory's fsync, which no process kill
(tests/soak/test_crash_points.py) can show.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from supervisor import snapshot_files
from supervisor.durable import write_all
from supervisor.errors import SnapshotError
from supervisor.snapshot import Snapshot, encode
from supervisor.snapshot_store import SnapshotStore
from supervisor.states import JobState
from tests.crash_model import Image, recording

Writer = Callable[[SnapshotStore, str, bytes], None]
Points = list[tuple[str, set[Image]]]
JOB = "orders"


def snap(generation: int) -> Snapshot:
    return Snapshot(
        job=JOB,
        generation=generation,
        offset={"pos": generation * 100},
        state=JobState.RUNNING,
        written_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def write_generations(directory: Path, count: int) -> Snapshot | None:
    """Write generations 1..`count` for real; the last one written."""

    async def write() -> Snapshot | None:
        store = SnapshotStore(directory)
        await store.prepare()
        written = None
        for generation in range(1, count + 1):
            written = await store.write(snap(generation))
        return written

    return anyio.run(write)


def record_write(directory: Path, existing: int, writer: Writer) -> tuple[Points, Snapshot | None]:
    """Write generations 1..`existing`, then record `writer` writing the next one.

    Returns the crash images after each call, and the generation that was current before.
    """
    old = write_generations(directory, existing)
    with recording(directory) as rec:
        writer(SnapshotStore(directory), JOB, encode(snap(existing + 1)))
    return rec.points, old


def check(
    root: Path, points: Points, old: Snapshot | None, new: Snapshot | None
) -> tuple[list[str], int]:
    """Load each distinct crash image once; what is wrong with each, and how many there were."""
    returned: dict[Image, bool] = {}
    first_seen: dict[Image, str] = {}
    for number, (call, images) in enumerate(points):
        for image in images:
            first_seen.setdefault(image, f"power cut after call #{number} {call}")
            returned[image] = returned.get(image, False) or number == len(points) - 1

    root.mkdir()

    async def load_all() -> list[str]:
        problems = []
        for index, (image, after_return) in enumerate(returned.items()):
            directory = root / f"cut-{index}"
            directory.mkdir(mode=0o700)
            for name, data in image:
                (directory / name).write_bytes(data)
            where = first_seen[image] + (" (or once the write returned)" if after_return else "")
            store = SnapshotStore(directory)
            try:
                await store.prepare()
                loaded = await store.load(JOB)
            except SnapshotError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if met := sorted(p.name for p in directory.iterdir() if p.name not in dict(image)):
                problems.append(f"{where}: a corrupt file set aside: {met}")
            if leftover := sorted(p.name for p in directory.iterdir() if p.suffix == ".tmp"):
                problems.append(f"{where}: temp files left after prepare: {leftover}")
            if loaded != new and (after_return or loaded != old):
                problems.append(f"{where}: loaded {describe(loaded)}, not {describe(new)}")
        return problems

    return anyio.run(load_all), len(returned)


def describe(snapshot: Snapshot | None) -> str:
    return "nothing" if snapshot is None else f"generation {snapshot.generation}"


def mutant(*, fsync_temp: str, fsync_directory: bool) -> Writer:
    """The write's steps in one place, with its fsyncs moved or left out."""

    def write(store: SnapshotStore, job: str, data: bytes) -> None:
        with snapshot_files.open_directory(store.directory) as fd:
            temp = snapshot_files.temp_name(job)
            file = os.open(temp, snapshot_files._OPEN_TEMP, 0o600, dir_fd=fd)
            write_all(file, data)
            if fsync_temp == "before rename":
                os.fsync(file)
            store._keep_previous(fd, job)
            os.replace(temp, store.path_for(job).name, src_dir_fd=fd, dst_dir_fd=fd)
            if fsync_temp == "after rename":
                os.fsync(file)
            os.close(file)
            if fsync_directory:
                os.fsync(fd)

    return write


@pytest.mark.parametrize("existing", [0, 1, 2])
def test_every_power_cut_leaves_the_old_or_the_new_generation(
    tmp_path: Path, existing: int
) -> None:
    """After each call of a write, every state a power cut could leave loads cleanly as the
    old or the new generation, and once the write returns as the new one."""
    points, old = record_write(tmp_path / "state", existing, SnapshotStore._write)
    problems, images = check(tmp_path / "cuts", points, old, snap(existing + 1))
    assert problems == []
    assert len(points) >= 6
    assert images >= len(points)


def test_every_power_cut_leaves_the_old_or_the_new_generation_without_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where links are refused (prev is then a fsynced copy), every power cut is just as safe."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", refuse)
    points, old = record_write(tmp_path / "state", 2, SnapshotStore._write)
    assert check(tmp_path / "cuts", points, old, snap(3))[0] == []
    assert [call for call, _ in points].count("fsync(file)") == 2  # the new file, and the copy


def test_the_mutants_scaffold_in_its_correct_order_passes(tmp_path: Path) -> None:
    """Control for the guards below: the mutant writer with nothing left out passes."""
    writer = mutant(fsync_temp="before rename", fsync_directory=True)
    points, old = record_write(tmp_path / "state", 2, writer)
    assert check(tmp_path / "cuts", points, old, snap(3))[0] == []


@pytest.mark.parametrize(
    ("fsync_temp", "fsync_directory", "caught"),
    [
        ("never", True, "a corrupt file set aside"),
        ("after rename", True, "a corrupt file set aside"),
        ("before rename", False, "loaded generation 2, not generation 3"),
    ],
    ids=["no-temp-fsync", "rename-before-fsync", "no-directory-fsync"],
)
def test_the_model_catches_a_writer_that_leaves_out_or_reorders_an_fsync(
    tmp_path: Path, fsync_temp: str, fsync_directory: bool, caught: str
) -> None:
    """Mutation guard: the same check fails against each broken writer, saying how."""
    writer = mutant(fsync_temp=fsync_temp, fsync_directory=fsync_directory)
    points, old = record_write(tmp_path / "state", 2, writer)
    problems, _ = check(tmp_path / "cuts", points, old, snap(3))
    assert any(caught in problem for problem in problems), problems


def test_a_power_cut_while_setting_aside_leaves_all_or_nothing_set_aside(tmp_path: Path) -> None:
    """Setting a FAILED job's files aside: every power cut leaves both in place or both
    aside (load gives generation 2 or nothing), never prev alone as if it were current."""
    state = tmp_path / "state"
    old = write_generations(state, 2)
    with recording(state) as rec:
        SnapshotStore(state)._set_aside(JOB, "failed")
    assert check(tmp_path / "cuts", rec.points, old, None)[0] == []
