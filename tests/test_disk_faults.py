"""Disk faults under a running job, with the real snapshot store: fsync raising EIO.

The previous snapshot stays byte-identical, the committed offset does not
advance, the job ends SUSPENDED with an error naming the path and errno, and
once the fault clears `resume` carries on with no manual cleanup.
"""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from supervisor.config.model import CheckpointPolicy, RetryPolicy
from supervisor.job import JobRunner
from supervisor.ledger import JobLedger
from supervisor.snapshot_store import SnapshotStore
from supervisor.states import JobState
from supervisor.testing import RecordingSink, ScriptedSource, fixed_components
from tests.helpers import make_job
from tests.lifecycle import Watch, eventually

pytestmark = pytest.mark.anyio


class FailingFsync:
    """os.fsync that raises EIO while `failing` (for every file), else the real one."""

    def __init__(self) -> None:
        self.failing = False
        self.real = os.fsync

    def __call__(self, fd: int) -> None:
        if self.failing:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        self.real(fd)


async def test_persistent_eio_suspends_and_resume_continues_after_it_clears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO on every fsync: old snapshot intact, SUSPENDED naming path and errno; resume recovers."""
    fsync = FailingFsync()
    monkeypatch.setattr(os, "fsync", fsync)
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
    runner = JobRunner(
        job,
        JobLedger(store, "orders", None),
        watch.record,
        start_slots=anyio.CapacityLimiter(1),
        components=fixed_components(source, sink),
    )
    snapshot_file = tmp_path / "state" / "orders.snapshot.toml"
    async with anyio.create_task_group() as tg:
        await tg.start(runner.run)
        await eventually(lambda: runner.ledger.offset == 20, within=30, step=0.01)
        good = snapshot_file.read_bytes()

        fsync.failing = True
        source.available = 40
        await eventually(
            lambda: runner.state is JobState.SUSPENDED and runner.persist_pending,
            within=30,
            step=0.01,
        )
        assert snapshot_file.read_bytes() == good  # byte-identical through the fault
        assert runner.ledger.offset == 20
        assert runner.cause is not None
        assert str(snapshot_file) in runner.cause and "EIO" in runner.cause

        fsync.failing = False
        await eventually(lambda: not runner.persist_pending, within=30, step=0.01)
        await runner.request("resume")
        await eventually(lambda: runner.ledger.offset == 40, within=30, step=0.01)
        runner.shut_down()
    assert [r["seq"] for r in sink.flushed][-20:] == list(range(20, 40))
