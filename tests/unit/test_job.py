"""The job lifecycle (SPEC §4) on virtual time: retries, suspension, operator commands.

Tests named after a reference text are regressions for the bug it describes
(see ../shared/reference/README.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import anyio
import pytest

from supervisor.config.model import CheckpointPolicy, JobConfig, RetryPolicy
from supervisor.errors import CommandRefused, FatalError, FinalCheckpointFailed, TransientError
from supervisor.snapshot import decode
from supervisor.start_slots import StartSlots
from supervisor.states import JobState
from supervisor.testing import RecordingSink, ScriptedSource
from tests.conftest import virtual_time_backend
from tests.helpers import make_job
from tests.in_memory_store import InMemorySnapshotStore
from tests.lifecycle import running_job, states_of

pytestmark = pytest.mark.anyio

R = JobState


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


def _job(**retry: Any) -> JobConfig:
    policy = RetryPolicy(initial=1.0, max=60.0, jitter=False, reset_after=30.0, max_attempts=5)
    return make_job(
        "orders",
        retry=replace(policy, **retry),
        checkpoint=CheckpointPolicy(every_records=10, interval=1.0),
    )


async def test_transient_failure_retries_then_recovers() -> None:
    """A transient error makes the job RETRYING; once healthy it is RUNNING with the count reset."""
    source = ScriptedSource(available=50, open_errors=[TransientError("broker away")])
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.RETRYING)
        assert owner.attempts == 1
        started = anyio.current_time()
        await watch.until(lambda: owner.state is R.RUNNING)
        assert anyio.current_time() - started >= 30.0  # reset_after
        assert owner.attempts == 0
    assert states_of(watch, "orders") == [R.RETRYING, R.RUNNING]


async def test_a_caught_up_retried_job_turns_running_at_reset_after() -> None:
    """A recovered job with nothing more to read is RUNNING once reset_after has passed,
    not when its next record arrives (its reads then wait an hour)."""
    source = ScriptedSource(available=5, open_errors=[TransientError("broker away")])
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: source.opens == 2 and source.open_now == 1)
        opened = anyio.current_time()
        await watch.until(lambda: owner.state is R.RUNNING)
        assert 30.0 <= anyio.current_time() - opened <= 31.0  # reset_after, within one interval
        assert owner.attempts == 0


async def test_budget_spent_fails_the_job_with_its_cause() -> None:
    """After max_attempts consecutive failures the job is FAILED and the cause is persisted."""
    store = InMemorySnapshotStore()
    errors: list[BaseException] = [ConnectionRefusedError(111, "refused")] * 3
    source = ScriptedSource(open_errors=list(errors))
    async with running_job(_job(max_attempts=3), source, store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.FAILED)
    snapshot = decode(store.files["orders"], job="orders", path=store.path_for("orders"))
    assert snapshot.state is R.FAILED
    assert snapshot.failure is not None
    assert snapshot.failure.attempts == 3
    assert snapshot.failure.error_type == "ConnectionRefusedError"
    assert snapshot.failure.first_failure_at < snapshot.failure.last_failure_at
    assert source.opens == 3


async def test_suspend_on_failure_suspends_with_the_snapshot_kept() -> None:
    """With suspend_on_failure a fatal error suspends the job; its offset stays as checkpointed."""
    store = InMemorySnapshotStore()
    job = replace(_job(), suspend_on_failure=True)
    source = ScriptedSource(available=25, batch=5, fail_at={24: FatalError("schema changed")})
    async with running_job(job, source, store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.SUSPENDED)
        assert owner.attempts == 1
    snapshot = decode(store.files["orders"], job="orders", path=store.path_for("orders"))
    assert (snapshot.state, snapshot.offset) == (R.SUSPENDED, 20)
    assert snapshot.failure is not None and "schema changed" in snapshot.failure.message


async def test_fatal_on_names_are_not_retried() -> None:
    """An exception named in fatal_on fails the job on the first attempt."""
    source = ScriptedSource(open_errors=[KeyError("x")])
    async with running_job(_job(fatal_on=("KeyError",)), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.FAILED)
    assert source.opens == 1


async def test_exception_group_counts_once_and_is_fatal_if_any_member_is() -> None:
    """Several errors from one attempt are one failure; a fatal member makes it fatal."""
    group = ExceptionGroup("two", [TransientError("a"), FatalError("b")])
    source = ScriptedSource(open_errors=[group])
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.FAILED)
        assert owner.attempts == 1


async def test_doris_overlapping_retry_never_runs_two_attempts() -> None:
    """Retry commands and backoff timers never start a second attempt while one is alive (Doris)."""
    source = ScriptedSource(open_errors=[TransientError("x")] * 4, available=10)
    async with running_job(_job(max_attempts=0), source) as (owner, watch):
        for _ in range(20):
            with contextlib.suppress(CommandRefused):
                await owner.retry()
            await anyio.sleep(0.3)
        await watch.until(lambda: owner.state is R.RETRYING and source.opens == 5)
    assert source.most_open_at_once == 1


async def test_doris_failure_does_not_overwrite_a_manual_pause() -> None:
    """A pause arriving while an attempt fails stands; the failure is not counted (Doris)."""
    sink = RecordingSink(fail_on_flush=TransientError("disk hiccup"))
    source = ScriptedSource(available=5)
    async with running_job(_job(), source, sink) as (owner, watch):
        await watch.until(lambda: owner.state is R.RUNNING)
        # The pause asks for a final checkpoint; that flush fails as the attempt ends:
        # the pause stands, and says its final checkpoint failed.
        with pytest.raises(FinalCheckpointFailed, match="disk hiccup"):
            await owner.pause()
        assert owner.state is R.PAUSED
        assert owner.attempts == 0
        await anyio.sleep(120)
        assert owner.state is R.PAUSED
    assert R.RETRYING not in states_of(watch, "orders")


async def test_pgboss_pause_in_backoff_does_not_burn_the_budget() -> None:
    """Attempts cancelled before they ran (paused in backoff) never count (pg-boss)."""
    source = ScriptedSource(open_errors=[TransientError("x")] * 5, available=5)
    async with running_job(_job(initial=50.0), source) as (owner, watch):
        for round_ in range(1, 6):
            await watch.until(lambda: owner.state is R.RETRYING)
            assert owner.attempts == 1
            await owner.pause()  # cancels the backoff: that attempt never ran
            assert owner.attempts == 1
            await owner.resume()  # resume resets the budget, never spends it
            assert owner.attempts == 0
            await watch.until(lambda r=round_: source.opens == r + 1)  # type: ignore[misc]
        await watch.until(lambda: owner.state is R.RUNNING)
    assert source.opens == 6


async def test_pgboss_waiting_for_a_start_slot_does_not_count() -> None:
    """A job PENDING on a start slot spends no attempt while it waits (pg-boss)."""
    slots = StartSlots(1)
    await slots.take()  # held by another job that is starting
    source = ScriptedSource(available=5)
    async with running_job(_job(), source, slots=slots) as (owner, _):
        await anyio.sleep(3600)
        assert (owner.state, owner.attempts, source.opens) == (R.PENDING, 0, 0)
        await owner.pause()
        assert (owner.state, owner.attempts) == (R.PAUSED, 0)


async def test_blueking_state_write_failing_during_an_outage_is_retried() -> None:
    """A refused SUSPENDED write holds the state in memory and is written later (BlueKing)."""
    store = InMemorySnapshotStore()
    job = replace(_job(), suspend_on_failure=True)
    source = ScriptedSource(available=5, open_errors=[FatalError("bad credentials")])
    async with running_job(job, source, store=store) as (owner, watch):
        store.fail_writes = True
        await watch.until(lambda: owner.state is R.SUSPENDED)
        await anyio.sleep(0.1)  # virtual: the failed write happens in the same instant
        assert owner.persist_pending
        assert "orders" not in store.files
        await anyio.sleep(10)
        store.fail_writes = False
        await watch.until(lambda: not owner.persist_pending)
    snapshot = decode(store.files["orders"], job="orders", path=store.path_for("orders"))
    assert snapshot.state is R.SUSPENDED


async def test_resume_on_retrying_is_refused_naming_retry_and_pause() -> None:
    """`resume` on a RETRYING job is refused with a message naming `retry` and `pause`."""
    source = ScriptedSource(open_errors=[TransientError("x")], available=5)
    async with running_job(_job(initial=100.0), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.RETRYING)
        with pytest.raises(
            CommandRefused, match=r"supervisor retry orders.*supervisor pause orders"
        ):
            await owner.resume()


async def test_retry_ends_the_backoff_now() -> None:
    """`retry` starts the next attempt without waiting out the backoff."""
    source = ScriptedSource(open_errors=[TransientError("x")], available=5)
    async with running_job(_job(initial=1000.0), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.RETRYING)
        assert source.opens == 1
        await owner.retry()
        await anyio.sleep(0.5)  # virtual time; the backoff would have lasted 60s
        assert source.opens == 2


async def test_stop_checkpoints_and_start_resumes_from_there() -> None:
    """`stop` ends with a final checkpoint; `start` continues from the committed offset."""
    store = InMemorySnapshotStore()
    sink = RecordingSink()
    source = ScriptedSource(available=35, batch=5)
    async with running_job(_job(), source, sink, store=store) as (owner, watch):
        await watch.until(lambda: source.position == 35)
        assert await owner.stop() is R.STOPPED
        assert owner.ledger.offset == 35
        source.available = 50
        await owner.start()
        await watch.until(lambda: len(sink.flushed) == 50)
    assert [r["seq"] for r in sink.flushed] == list(range(50))


async def test_start_after_failed_begins_afresh_and_keeps_the_old_snapshot() -> None:
    """A FAILED job's `start` begins at the source's start; its old snapshot is set aside."""
    store = InMemorySnapshotStore()
    sink = RecordingSink()
    source = ScriptedSource(available=20, batch=10, fail_at={15: FatalError("x")})
    async with running_job(_job(), source, sink, store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.FAILED)
        assert owner.ledger.offset == 10
        await owner.start()
        await watch.until(lambda: source.position == 20 and owner.ledger.offset == 20)
    assert list(store.set_aside_files)
    assert [r["seq"] for r in sink.flushed][:10] == list(range(10))
    assert [r["seq"] for r in sink.flushed][10:] == list(range(20))


async def test_set_offset_only_when_no_attempt_runs() -> None:
    """The committed offset can be changed on a PAUSED job, not on a RUNNING one."""
    source = ScriptedSource(available=10)
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.RUNNING)
        with pytest.raises(CommandRefused, match="`supervisor pause orders` or `supervisor stop"):
            await owner.set_offset(3)
        await owner.pause()
        await owner.set_offset(3)
        assert owner.ledger.offset == 3


async def test_a_recovered_outage_does_not_rewrite_a_suspended_snapshot() -> None:
    """Once a later write succeeded, the write retrier owes nothing and leaves the file alone."""
    store = InMemorySnapshotStore()
    job = replace(_job(), suspend_on_failure=True)
    source = ScriptedSource(available=5)
    async with running_job(job, source, store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.RUNNING)
        store.fail_writes = True
        with pytest.raises(FinalCheckpointFailed):  # the disk refuses that write too
            await owner.stop()
        assert owner.persist_pending
        store.fail_writes = False
        source.open_errors.append(FatalError("gone"))
        await owner.start()
        await watch.until(lambda: owner.state is R.SUSPENDED)
        await anyio.sleep(0.1)  # virtual: the SUSPENDED write completes
        suspended = store.files["orders"]
        await anyio.sleep(600)
        assert store.files["orders"] == suspended


async def test_shutdown_with_a_state_write_still_refused_ends_its_retries() -> None:
    """The owner ends on shutdown while the disk still refuses its state write, and the task
    retrying that write ends with it: the daemon's group of job tasks is not held open."""
    store = InMemorySnapshotStore()
    source = ScriptedSource(available=5)
    with anyio.fail_after(3600):  # virtual time: a retrier left running would hang here
        async with running_job(_job(), source, store=store) as (owner, watch):
            await watch.until(lambda: owner.state is R.RUNNING)
            store.fail_writes = True
            with pytest.raises(FinalCheckpointFailed):  # the disk refuses that write too
                await owner.pause()
            assert owner.persist_pending
            await anyio.sleep(5)  # a retry or two, refused
    assert owner.state is R.PAUSED
    assert owner.persist_pending  # the disk refused to the end; the old snapshot stands


async def test_an_hour_of_retrying_stays_within_the_backoff_bounds() -> None:
    """An hour of virtual failures: every wait is within [0, max] and the budget never runs out."""
    from structlog.testing import capture_logs

    rng = iter([0.5, 0.0, 0.999] * 1000)
    job = _job(initial=1.0, max=60.0, jitter=True, max_attempts=0)
    source = ScriptedSource(open_errors=[TransientError("down")] * 10_000)
    with capture_logs() as logs:
        async with running_job(job, source, rng=lambda: next(rng)) as (owner, _):
            await anyio.sleep(3600)
            assert owner.state is R.RETRYING
    delays = [e["delay"] for e in logs if e["event"] == "job.retry_scheduled"]
    assert all(0 <= delay <= 60.0 for delay in delays)
    assert max(delays) > 50  # the cap was reached: jitter of 0.999 x 60
    assert source.opens == len(delays) or source.opens == len(delays) + 1
    assert owner.attempts == source.opens
