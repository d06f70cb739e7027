"""A harness for driving JobOwners in-process, on virtual time, with test doubles."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import trio.lowlevel
from trio.testing import MockClock

from supervisor.config.model import Config, JobConfig
from supervisor.daemon import read_config_files
from supervisor.job_owner import JobOwner
from supervisor.ledger import JobLedger
from supervisor.start_slots import StartSlots
from supervisor.states import JobState
from supervisor.testing import (
    RecordingSink,
    ScriptedSource,
    fixed_components,
)
from tests.in_memory_store import InMemorySnapshotStore


@dataclass
class Watch:
    """Every state change, and a way to wait for a condition on them."""

    changes: list[tuple[str, JobState, JobState]] = field(default_factory=list)
    causes: list[str | None] = field(default_factory=list)
    """The cause each change in `changes` was reported with."""
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def record(self, owner: JobOwner, old: JobState, new: JobState, cause: str | None) -> None:
        self.changes.append((owner.name, old, new))
        self.causes.append(cause)
        self._changed.set()
        self._changed = anyio.Event()

    async def until(self, condition: Callable[[], bool], *, within: float = 86_400) -> None:
        """Wait (in virtual time) until `condition` holds; re-checked on each state
        change and every 10 ms of virtual time, so counters can be waited on too."""
        with anyio.fail_after(within):
            while not condition():
                with anyio.move_on_after(0.01):
                    await self._changed.wait()


@asynccontextmanager
async def running_job(
    job: JobConfig,
    source: ScriptedSource,
    sink: RecordingSink | None = None,
    *,
    store: InMemorySnapshotStore | None = None,
    slots: StartSlots | None = None,
    watch: Watch | None = None,
    rng: Callable[[], float] = lambda: 1.0,
) -> AsyncIterator[tuple[JobOwner, Watch]]:
    """Run one job's owner task for the body of the `async with`, then shut it down."""
    store = store if store is not None else InMemorySnapshotStore()
    watch = watch if watch is not None else Watch()
    sink = sink if sink is not None else RecordingSink()
    owner = JobOwner(
        job,
        JobLedger(store, job.name, await store.load(job.name)),
        watch.record,
        start_slots=slots or StartSlots(8),
        components=fixed_components(source, sink),
        rng=rng,
    )
    async with anyio.create_task_group() as tg:
        await tg.start(owner.run, tg)
        yield owner, watch
        owner.shut_down()


async def eventually(
    condition: Callable[[], bool], *, within: float = 86_400, step: float = 0.1
) -> None:
    """Wait until `condition` holds, re-checking every `step` seconds.

    Free on a virtual clock; on real time (tests whose disk I/O runs in threads,
    which virtual time cannot stand in for) pass a small `within` and `step`.
    """
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - see the docstring
            await anyio.sleep(step)


def states_of(watch: Watch, job: str) -> list[JobState]:
    """The sequence of states a job went through (after its first)."""
    return [new for name, _, new in watch.changes if name == job]


@contextmanager
def clock_held() -> Iterator[None]:
    """Virtual time stands still in the body, for awaiting a worker thread: the autojumping
    clock takes a task waiting on a thread for idle and would leap to the next timer (an
    hour on, for a job waiting for records) while the thread works."""
    clock = trio.lowlevel.current_clock()
    assert isinstance(clock, MockClock), "for tests on virtual_time_backend()"
    threshold, clock.autojump_threshold = clock.autojump_threshold, math.inf
    try:
        yield
    finally:
        clock.autojump_threshold = threshold


async def read_config_on_virtual_time(path: Path) -> Config:
    """A daemon's `read_config` for tests on virtual time: the files, read in a worker
    thread as the daemon reads them, with the clock held meanwhile."""
    with clock_held():
        return await read_config_files(path)
