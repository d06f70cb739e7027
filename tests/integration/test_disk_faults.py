"""Disk faults under a running job, with the real snapshot store.

EIO (faked: a disk cannot be made to fail on cue here) from fsync or write,
once or persistently, and ENOSPC from a genuinely full tmpfs under a real
daemon. Throughout, the previous snapshot stays byte-identical and the
committed offset does not advance until a write succeeds. Once: the attempt
is retried and the job is RUNNING again by itself. Persistently: the job ends
SUSPENDED with an error naming the path and errno, and once the fault clears
`resume` carries on with no manual cleanup.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from supervisor.config.model import CheckpointPolicy, RetryPolicy
from supervisor.job_owner import JobOwner
from supervisor.ledger import JobLedger
from supervisor.snapshot import decode
from supervisor.snapshot_store import SnapshotStore
from supervisor.start_slots import StartSlots
from supervisor.states import JobState
from supervisor.testing import RecordingSink, ScriptedSource, fixed_components
from tests.daemon_process import DAEMON_TOML, DaemonProcess, write_config
from tests.helpers import make_job
from tests.helpers import run_cli as cli
from tests.lifecycle import Watch, eventually, states_of

pytestmark = pytest.mark.anyio


class Failing:
    """os.<call> that raises EIO while `failing` (fsync: for every file; write: for the
    snapshot temp files, so nothing else in the process is hit), else the real one."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
        self.failing = False
        self.real = getattr(os, call)
        self.hits = is_temp_file if call == "write" else lambda fd: True
        monkeypatch.setattr(os, call, self)

    def __call__(self, fd: int, *args: object) -> object:
        if self.failing and self.hits(fd):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return self.real(fd, *args)


@pytest.mark.parametrize("call", ["fsync", "write"])
async def test_persistent_eio_suspends_and_resume_continues_after_it_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """EIO on every fsync (or snapshot write): old snapshot intact, SUSPENDED naming path
    and errno; resume recovers."""
    fault = Failing(monkeypatch, call)
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    job = replace(
        make_job(
            "orders",
            retry=RetryPolicy(initial=0.01, max=0.01, jitter=False, max_attempts=2),
            checkpoint=CheckpointPolicy(every_records=10, interval=0.05),
        ),
        suspend_on_failure=True,
    )
    source, sink = ScriptedSource(available=20, batch=10), RecordingSink()
    watch = Watch()
    owner = JobOwner(
        job,
        JobLedger(store, "orders", None),
        watch.record,
        start_slots=StartSlots(1),
        components=fixed_components(source, sink),
    )
    snapshot_file = tmp_path / "state" / "orders.snapshot.toml"
    async with anyio.create_task_group() as tg:
        await tg.start(owner.run, tg)
        await eventually(lambda: owner.ledger.offset == 20, within=30, step=0.01)
        good = snapshot_file.read_bytes()

        fault.failing = True
        source.available = 40
        await eventually(
            lambda: owner.state is JobState.SUSPENDED and owner.persist_pending,
            within=30,
            step=0.01,
        )
        assert snapshot_file.read_bytes() == good  # byte-identical through the fault
        assert owner.ledger.offset == 20
        assert owner.cause is not None
        assert str(snapshot_file) in owner.cause and "EIO" in owner.cause

        fault.failing = False
        await eventually(lambda: not owner.persist_pending, within=30, step=0.01)
        await owner.resume()
        await eventually(lambda: owner.ledger.offset == 40, within=30, step=0.01)
        owner.shut_down()
    assert [r["seq"] for r in sink.flushed][-20:] == list(range(20, 40))


def is_temp_file(fd: int) -> bool:
    return Path(f"/proc/self/fd/{fd}").readlink().suffix == ".tmp"


def is_directory(fd: int) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


class FaultOnce:
    """os.<call> raising EIO once for the fds `target` picks; the next such call then
    waits until `release()`, so a test can look at the disk between the two."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, call: str, target: str) -> None:
        self.real = getattr(os, call)
        self.target = {"temp file": is_temp_file, "directory": is_directory}[target]
        self.fired = False
        self.held = threading.Event()
        self._released = threading.Event()
        monkeypatch.setattr(os, call, self)

    def __call__(self, fd: int, *args: object) -> object:
        if self.target(fd):
            if not self.fired:
                self.fired = True
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            self.held.set()
            assert self._released.wait(timeout=30), "never released"
        return self.real(fd, *args)

    def release(self) -> None:
        self._released.set()


def owner_for(
    store: SnapshotStore, source: ScriptedSource, sink: RecordingSink, watch: Watch
) -> JobOwner:
    job = make_job(
        "orders",
        retry=RetryPolicy(initial=0.01, max=0.01, jitter=False, max_attempts=5, reset_after=0.2),
        checkpoint=CheckpointPolicy(every_records=10, interval=0.05),
    )
    return JobOwner(
        job,
        JobLedger(store, "orders", None),
        watch.record,
        start_slots=StartSlots(1),
        components=fixed_components(source, sink),
    )


@pytest.mark.parametrize(
    ("call", "target"),
    [("fsync", "temp file"), ("write", "temp file"), ("fsync", "directory")],
)
async def test_eio_once_is_retried_and_the_job_recovers_by_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, target: str
) -> None:
    """One EIO from a snapshot write: the old snapshot and the committed offset hold,
    the attempt is retried and the job is RUNNING again with no operator step."""
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    source, sink, watch = ScriptedSource(available=20, batch=10), RecordingSink(), Watch()
    owner = owner_for(store, source, sink, watch)
    snapshot_file = store.path_for("orders")
    async with anyio.create_task_group() as tg:
        await tg.start(owner.run, tg)
        await eventually(lambda: owner.ledger.offset == 20, within=30, step=0.01)
        good = snapshot_file.read_bytes()
        generation = owner.ledger.snapshot.generation

        fault = FaultOnce(monkeypatch, call, target)
        try:
            source.available = 40
            await eventually(fault.held.is_set, within=30, step=0.01)  # failed once; next held
            assert owner.state is JobState.RETRYING
            assert owner.ledger.offset == 20
            if target == "temp file":
                assert snapshot_file.read_bytes() == good  # byte-identical through the fault
            else:
                # The failed write was renamed into place before its directory fsync
                # failed; the next one (RETRYING, held at its own directory fsync) did
                # not reuse that generation for other contents.
                prev = snapshot_file.with_name("orders.snapshot.prev.toml")
                landed = decode(prev.read_bytes(), job="orders", path=prev)
                after = decode(snapshot_file.read_bytes(), job="orders", path=snapshot_file)
                assert (landed.generation, landed.offset) == (generation + 1, 30)
                assert (after.generation, after.offset) == (generation + 2, 20)
        finally:
            fault.release()
        await eventually(
            lambda: owner.state is JobState.RUNNING and owner.ledger.offset == 40,
            within=30,
            step=0.01,
        )
        owner.shut_down()
    assert states_of(watch, "orders")[-2:] == [JobState.RETRYING, JobState.RUNNING]
    assert owner.attempts == 0
    final = decode(snapshot_file.read_bytes(), job="orders", path=snapshot_file)
    assert final.offset == 40
    assert not [p for p in snapshot_file.parent.iterdir() if p.suffix == ".tmp"]
    assert [r["seq"] for r in sink.flushed][-20:] == list(range(20, 40))


MOUNT_TMPFS = 'mount -t tmpfs -o size=64k,mode=0700 tmpfs "$0"'
JOB_TOML = """\
suspend_on_failure = true
[source]
type = "generate"
rate = 1000
[sink]
type = "null"
[checkpoint]
interval = "50ms"
[retry]
initial = "50ms"
max = "50ms"
jitter = false
max_attempts = 2
"""


def fill(path: Path) -> None:
    """Append to `path` until the file system says ENOSPC."""
    with path.open("ab", buffering=0) as file:
        try:
            while file.write(b"\0" * 4096):
                pass
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc


def test_a_full_disk_suspends_naming_path_and_enospc_and_resume_continues(tmp_path: Path) -> None:
    """ENOSPC from a real, full 64 KiB tmpfs under a real daemon: SUSPENDED with the path and
    ENOSPC in `status`, the previous snapshot byte-identical, and `resume` carries on once
    space is freed, with no other cleanup."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1): cannot mount a small tmpfs without root")
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", MOUNT_TMPFS, str(state)],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        pytest.skip(f"the kernel refused a tmpfs in a user+mount namespace: {probe.stderr.strip()}")
    config = write_config(tmp_path, {"orders": JOB_TOML}, DAEMON_TOML)
    wrapper = ("unshare", "-rm", "sh", "-c", MOUNT_TMPFS + ' && exec "$@"', str(state))
    daemon = DaemonProcess(config, wrapper=wrapper)
    try:
        daemon.wait_for("job.state_changed", job="orders", to="running")
        # The daemon's tmpfs, seen from outside its mount namespace.
        inside = Path(f"/proc/{daemon.process.pid}/root") / state.relative_to("/")
        snapshot = inside / "orders.snapshot.toml"
        daemon.wait_for("job.checkpoint", job="orders", count=2)  # so prev exists too

        fill(inside / "filler")
        daemon.wait_for("job.attempt_failed", job="orders")
        good = snapshot.read_bytes()  # the last write that got through: nothing frees space now
        daemon.wait_for("job.state_changed", job="orders", to="suspended")
        shown = cli(config, "status", "orders", "--json")
        assert shown.returncode == 3, shown.stderr
        [view] = json.loads(shown.stdout)
        assert view["state"] == "suspended"
        assert f"cannot write snapshot {state / 'orders.snapshot.toml'}: ENOSPC" in view["error"]
        committed = decode(good, job="orders", path=snapshot)
        assert view["offset"] == committed.offset
        assert snapshot.read_bytes() == good
        assert sorted(p.name for p in inside.iterdir()) == [
            "filler",
            "orders.snapshot.prev.toml",
            "orders.snapshot.toml",
            "supervisor.lock",
        ]

        (inside / "filler").unlink()  # the fault clears
        resumed = cli(config, "resume", "orders")
        assert resumed.returncode == 0, resumed.stderr
        daemon.wait_for("job.state_changed", job="orders", to="running")
        next(
            event
            for event in daemon.iter_events()
            if event.get("event") == "job.checkpoint" and event["offset"] != committed.offset
        )
        after = decode(snapshot.read_bytes(), job="orders", path=snapshot)
        assert isinstance(after.offset, int) and isinstance(committed.offset, int)
        assert after.offset > committed.offset
        assert after.generation > committed.generation
    finally:
        daemon.keep_draining()
        assert daemon.stop() == 0
