"""A failure storm: a thousand jobs failing at the same moment, on virtual time."""

from __future__ import annotations

import random
from dataclasses import dataclass

import anyio
import pytest

from supervisor.config.model import CheckpointPolicy, RetryPolicy
from supervisor.errors import TransientError
from supervisor.job_owner import JobOwner
from supervisor.ledger import JobLedger
from supervisor.protocols import Offset
from supervisor.retry import backoff_delay
from supervisor.start_slots import StartSlots
from supervisor.states import JobState
from supervisor.testing import (
    RecordingSink,
    ScriptedSource,
    fixed_components,
)
from tests.conftest import virtual_time_backend
from tests.helpers import make_job
from tests.in_memory_store import InMemorySnapshotStore
from tests.lifecycle import Watch

pytestmark = pytest.mark.anyio

JOBS = 1000
SLOTS = 8


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


@dataclass
class Opening:
    """How many sources are inside `open` right now, and the most ever at once."""

    now: int = 0
    most: int = 0


@dataclass
class CountedSource(ScriptedSource):
    opening: Opening | None = None

    async def open(self, offset: Offset | None) -> None:
        assert self.opening is not None
        self.opening.now += 1
        self.opening.most = max(self.opening.most, self.opening.now)
        try:
            await anyio.sleep(0.05)  # a slow connect: starts overlap unless slots bound them
            await super().open(offset)
        finally:
            self.opening.now -= 1


async def test_a_thousand_jobs_failing_at_once_all_recover_without_overlap() -> None:
    """1,000 jobs retry with no overlapping attempts, at most 8 starting at once, and recover."""
    rng = random.Random(1)
    policy = RetryPolicy(initial=1.0, max=30.0, jitter=True, reset_after=10.0, max_attempts=0)
    store = InMemorySnapshotStore()
    slots = StartSlots(SLOTS)
    opening = Opening()
    watch = Watch()
    sources: list[CountedSource] = []
    owners: list[JobOwner] = []
    for index in range(JOBS):
        job = make_job(
            f"job{index}", retry=policy, checkpoint=CheckpointPolicy(every_records=5, interval=1.0)
        )
        source = CountedSource(available=5, opening=opening)
        sink = RecordingSink()
        sources.append(source)
        owners.append(
            JobOwner(
                job,
                JobLedger(store, job.name, None),
                watch.record,
                start_slots=slots,
                components=fixed_components(source, sink),
                rng=rng.random,
            )
        )
    async with anyio.create_task_group() as tg:
        for owner in owners:
            await tg.start(owner.run, tg)
        await watch.until(lambda: all(r.state is JobState.RUNNING for r in owners))

        for source in sources:  # the broker goes away for everyone at once
            source.fail_next_read(TransientError("broker restarted"))
            source.available = 10
        await watch.until(lambda: all(r.state is JobState.RETRYING for r in owners))
        await anyio.sleep(0.001)  # virtual: let each owner schedule its retry
        delays = [r.next_retry_at for r in owners if r.next_retry_at is not None]
        assert len(set(delays)) > JOBS // 2  # jitter spreads them out

        await watch.until(lambda: all(r.state is JobState.RUNNING for r in owners))
        assert all(r.attempts == 0 for r in owners)
        for owner in owners:
            owner.shut_down()

    assert opening.most <= SLOTS
    assert max(source.most_open_at_once for source in sources) == 1
    assert all(source.opens == 2 for source in sources)
    assert backoff_delay(1, policy, rng.random) <= policy.initial
