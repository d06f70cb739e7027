"""Job rules of issue 14 on virtual time: what `status` shows, what survives a restart
(from the snapshot a previous daemon wrote), and what the operator is told and allowed.

Each test reproduces one defect of issue 14 (its number in the docstring's comment).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from supervisor.config.model import CheckpointPolicy, JobConfig, RetryPolicy
from supervisor.control.commands import job_view, run_job_command
from supervisor.control.protocol import JobVerb
from supervisor.errors import CommandRefused, FatalError, SnapshotError, TransientError
from supervisor.job_owner import JobOwner
from supervisor.ledger import JobLedger
from supervisor.snapshot import FailureRecord, Snapshot, decode, encode
from supervisor.start_slots import StartSlots
from supervisor.states import (
    ACTIVE,
    COMMANDS,
    OFFSET_SETTABLE,
    Event,
    JobState,
    next_state,
    offset_refusal,
    retry_refusal,
)
from supervisor.testing import RecordingSink, ScriptedSource
from tests.conftest import virtual_time_backend
from tests.helpers import make_job
from tests.in_memory_store import InMemorySnapshotStore
from tests.lifecycle import Watch, running_job, states_of

pytestmark = pytest.mark.anyio

R = JobState
WITHIN = 600.0
"""Virtual seconds any wait of these tests may take: a defect fails fast, not in a day."""
LONG_AGO = datetime(2020, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


def _job(**changes: Any) -> JobConfig:
    policy = RetryPolicy(initial=60.0, max=60.0, jitter=False, reset_after=30.0, max_attempts=5)
    return make_job(
        "orders",
        retry=policy,
        checkpoint=CheckpointPolicy(every_records=10, interval=1.0),
        **changes,
    )


def _seed(store: InMemorySnapshotStore, **fields: Any) -> None:
    """Put a snapshot in `store` as a previous daemon would have left it."""
    base: dict[str, Any] = {
        "job": "orders",
        "generation": 3,
        "offset": 10,
        "state": R.RUNNING,
        "written_at": datetime.now(UTC),
    }
    store.files["orders"] = encode(Snapshot(**{**base, **fields}))


def _failure(message: str = "broker away") -> FailureRecord:
    return FailureRecord(
        attempts=2,
        error_type="supervisor.errors.TransientError",
        message=message,
        first_failure_at=LONG_AGO,
        last_failure_at=LONG_AGO,
    )


def _on_disk(store: InMemorySnapshotStore) -> Snapshot:
    return decode(store.files["orders"], job="orders", path=store.path_for("orders"))


async def _refused(owner: JobOwner, verb: str) -> str:
    with pytest.raises(CommandRefused) as refused:
        await run_job_command(owner, JobVerb(verb))
    return str(refused.value)


# --- 14.9: the last error and the cause of the last change are two things ---------------


async def test_each_state_change_says_its_own_cause() -> None:
    """A change nothing else explains (opened, source ended) carries its own cause, not the
    operator's command from before it."""
    # Found using the CLI: a job started by the operator said "started by operator" for
    # running -> finished too, in `events` and in `status JOB`.
    async with running_job(_job(), ScriptedSource(count=5)) as (owner, watch):
        await watch.until(lambda: owner.state is R.FINISHED, within=WITHIN)
        await owner.start()
        await watch.until(lambda: len(watch.changes) == 5, within=WITHIN)
    assert [(old, new) for _, old, new in watch.changes] == [
        (R.PENDING, R.RUNNING),
        (R.RUNNING, R.FINISHED),
        (R.FINISHED, R.PENDING),
        (R.PENDING, R.RUNNING),
        (R.RUNNING, R.FINISHED),
    ]
    assert watch.causes == [
        "attempt opened",
        "source reached its end",
        "started by operator",
        "attempt opened",
        "source reached its end",
    ]


@pytest.mark.parametrize(
    ("command", "cause"),
    [
        (JobOwner.pause, "paused by operator"),
        (JobOwner.stop, "stopped by operator"),
        (lambda owner: owner.reconfigure(_job()), "definition changed by reload"),
    ],
    ids=["pause", "stop", "reconfigure"],
)
async def test_status_error_stays_the_last_failure_after_an_operator_change(
    command: Callable[[JobOwner], Awaitable[JobState]], cause: str
) -> None:
    """After pause, stop or reload of a retrying job, `error` is still its failure and
    `cause` says why it changed state."""
    # Issue 14.9: LAST ERROR showed "paused by operator" and the like.
    source = ScriptedSource(open_errors=[TransientError("broker away")] * 3)
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.RETRYING, within=WITHIN)
        await command(owner)
        view = job_view(owner, anyio.current_time())
        assert view["error"] == "supervisor.errors.TransientError: broker away"
        assert view["cause"] == cause


# --- 14.10: RETRYING until proved healthy, and the backoff survives a restart ----------


async def test_a_retrying_job_reloaded_stays_retrying_until_healthy() -> None:
    """A reload restarts a retrying job, which is RETRYING (not RUNNING) until healthy."""
    # Issue 14.10: after a reload it showed RUNNING, attempt 1, before proving healthy.
    source = ScriptedSource(available=5, open_errors=[TransientError("broker away")])
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.RETRYING, within=WITHIN)
        await owner.reconfigure(_job())
        await watch.until(lambda: source.open_now == 1, within=WITHIN)
        assert (owner.state, owner.attempts) == (R.RETRYING, 1)
        await watch.until(lambda: owner.state is R.RUNNING, within=WITHIN)
        assert owner.attempts == 0
    assert states_of(watch, "orders") == [R.RETRYING, R.PENDING, R.RETRYING, R.RUNNING]


async def test_a_retryable_failure_persists_when_the_retry_is_due() -> None:
    """The snapshot written on a retryable failure records the wall-clock next-retry time."""
    store = InMemorySnapshotStore()
    source = ScriptedSource(open_errors=[TransientError("broker away")])
    before = datetime.now(UTC)
    async with running_job(_job(), source, store=store) as (owner, watch):
        await watch.until(
            lambda: owner.state is R.RETRYING and "orders" in store.files, within=WITHIN
        )
        snapshot = _on_disk(store)
    assert snapshot.state is R.RETRYING
    assert snapshot.next_retry_at is not None
    assert before + timedelta(seconds=59) < snapshot.next_retry_at
    assert snapshot.next_retry_at < datetime.now(UTC) + timedelta(seconds=61)


async def test_a_restart_waits_out_the_rest_of_the_backoff_as_retrying() -> None:
    """A job that was retrying comes back RETRYING with its count, and first opens when
    the persisted next-retry time comes."""
    # Issue 14.10: it came back PENDING and opened at once, skipping the backoff.
    store = InMemorySnapshotStore()
    due = datetime.now(UTC) + timedelta(hours=1)
    _seed(store, state=R.RETRYING, attempts=2, failure=_failure(), next_retry_at=due)
    source = ScriptedSource(available=5)
    async with running_job(_job(), source, store=store) as (owner, watch):
        assert (owner.state, owner.attempts) == (R.RETRYING, 2)
        retry_in = job_view(owner, anyio.current_time())["next_retry_in"]
        assert 3590 < retry_in <= 3600
        await anyio.sleep(3590)  # virtual time
        assert source.opens == 0
        await watch.until(lambda: source.opens == 1, within=11)
        assert owner.state is R.RETRYING  # not RUNNING before it has proved healthy
        await watch.until(lambda: owner.state is R.RUNNING, within=WITHIN)


async def test_retry_ends_a_restored_backoff_now() -> None:
    """`retry` works on the backoff a restart restored."""
    store = InMemorySnapshotStore()
    due = datetime.now(UTC) + timedelta(hours=1)
    _seed(store, state=R.RETRYING, attempts=1, failure=_failure(), next_retry_at=due)
    source = ScriptedSource(available=5)
    async with running_job(_job(), source, store=store) as (owner, watch):
        started = anyio.current_time()
        await owner.retry()
        await watch.until(lambda: source.opens == 1, within=WITHIN)
        assert anyio.current_time() - started < 1


# --- 14.17: SINCE survives a restart -------------------------------------------------


@pytest.mark.parametrize("state", [R.PAUSED, R.SUSPENDED, R.STOPPED, R.FAILED, R.FINISHED])
async def test_since_of_a_persisted_state_survives_a_restart(state: JobState) -> None:
    """A job restored in a persisted state shows the time it entered it, not the restart's."""
    # Issue 14.17: SINCE jumped to the daemon's restart time.
    store = InMemorySnapshotStore()
    _seed(store, state=state, since=LONG_AGO)
    async with running_job(_job(), ScriptedSource(), store=store) as (owner, _):
        assert owner.state is state
        assert job_view(owner, anyio.current_time())["since"] == "2020-01-02T03:04:05+00:00"


async def test_a_state_change_records_its_time_in_the_snapshot() -> None:
    """Pausing writes the time the job became PAUSED into its snapshot."""
    store = InMemorySnapshotStore()
    async with running_job(_job(), ScriptedSource(available=5), store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.RUNNING, within=WITHIN)
        await owner.pause()
        assert _on_disk(store).since == datetime.fromtimestamp(owner.since, UTC)


async def test_a_restored_active_job_is_pending_since_the_restart() -> None:
    """A job that was RUNNING comes back PENDING, since now (its old since is not shown)."""
    store = InMemorySnapshotStore()
    _seed(store, state=R.RUNNING, since=LONG_AGO)
    async with running_job(_job(), ScriptedSource(available=5), store=store) as (owner, _):
        assert owner.since > time.time() - 60


# --- 14.7 and 14.15: a chosen offset, and a FAILED job's fresh start ----------------------


async def test_an_offset_set_on_a_failed_job_survives_a_restart() -> None:
    """`offset --set` on a FAILED job, a daemon restart, then `start`: it begins there."""
    # Issue 14.7: the choice lived only in memory; after a restart `start` began afresh.
    store = InMemorySnapshotStore()
    job = _job()
    failing = ScriptedSource(available=20, open_errors=[FatalError("schema changed")])
    async with running_job(job, failing, store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.FAILED, within=WITHIN)
        await owner.set_offset(7)
    sink = RecordingSink()
    source = ScriptedSource(available=20)
    async with running_job(job, source, sink, store=store) as (owner, watch):
        assert (owner.state, owner.ledger.offset) == (R.FAILED, 7)
        await owner.start()
        await watch.until(lambda: owner.ledger.offset == 20, within=WITHIN)
    assert [record["seq"] for record in sink.flushed] == list(range(7, 20))


async def test_start_of_a_failed_job_begins_afresh_over_an_offset_keeping_sink() -> None:
    """A FAILED job's `start` begins at the source's start even when its sink keeps an
    offset of its own (as the sqlite sink does)."""
    # Issue 14.15: the sink's offset won, so `start` resumed instead of beginning afresh.
    store = InMemorySnapshotStore()
    sink = RecordingSink(transactional=True)
    source = ScriptedSource(available=30, batch=5, fail_at={24: FatalError("schema changed")})
    async with running_job(_job(), source, sink, store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.FAILED, within=WITHIN)
        assert sink.stored_offset == 20
        sink.flushed.clear()
        await owner.start()
        await watch.until(lambda: sink.stored_offset == 30, within=WITHIN)
    assert [record["seq"] for record in sink.flushed] == list(range(30))
    assert not _on_disk(store).offset_chosen  # the first checkpoint settled the choice


async def test_an_offset_set_wins_over_an_offset_keeping_sink() -> None:
    """An operator's `offset --set` is where the next attempt begins, whatever the sink holds."""
    sink = RecordingSink(transactional=True)
    source = ScriptedSource(available=30, batch=5)
    async with running_job(_job(), source, sink) as (owner, watch):
        await watch.until(lambda: sink.stored_offset == 30, within=WITHIN)
        await owner.stop()
        await owner.set_offset(12)
        sink.flushed.clear()
        await owner.start()
        await watch.until(lambda: sink.stored_offset == 30 and bool(sink.flushed), within=WITHIN)
    assert [record["seq"] for record in sink.flushed] == list(range(12, 30))


async def test_without_a_choice_the_sink_offset_still_wins() -> None:
    """Resuming a stopped job still takes an offset-keeping sink's own offset (exactly-once)."""
    store = InMemorySnapshotStore()
    _seed(store, state=R.STOPPED, offset=5)
    sink = RecordingSink(transactional=True, stored_offset=8)
    source = ScriptedSource(available=10)
    async with running_job(_job(), source, sink, store=store) as (owner, watch):
        await owner.start()
        await watch.until(lambda: sink.stored_offset == 10, within=WITHIN)
    assert [record["seq"] for record in sink.flushed] == [8, 9]


# --- 14.11: a refused resume leaves no event behind ------------------------------------


@asynccontextmanager
async def _unreadable_job(
    store: InMemorySnapshotStore, watch: Watch, *, suspend: bool
) -> AsyncIterator[JobOwner]:
    job = _job(suspend_on_failure=suspend)
    owner = JobOwner(job, JobLedger(store, "orders", None), watch.record, start_slots=StartSlots(8))
    try:
        await store.load("orders")
    except SnapshotError as exc:
        owner.fail_at_start(exc)
    async with anyio.create_task_group() as tg:
        await tg.start(owner.run, tg)
        yield owner
        owner.shut_down()


@pytest.mark.parametrize(
    ("suspend", "state", "verb"),
    [
        (True, R.SUSPENDED, "resume"),
        (False, R.FAILED, "start"),
        (False, R.FAILED, "restart"),
    ],
)
async def test_a_command_refused_for_an_unreadable_snapshot_emits_no_transition(
    suspend: bool, state: JobState, verb: str
) -> None:
    """`resume`/`start`/`restart` refused because the snapshot is still unreadable change
    no state and emit no event; once it is repaired the command emits one change."""
    # Issue 14.11: "suspended -> pending" was the last event while status said SUSPENDED.
    store, watch = InMemorySnapshotStore(), Watch()
    store.files["orders"] = b"format = 2\nnot toml"
    async with _unreadable_job(store, watch, suspend=suspend) as owner:
        assert owner.state is state
        assert "orders.snapshot.toml" in await _refused(owner, verb)
        assert owner.state is state
        assert watch.changes == []
        _seed(store, state=state, offset=4)
        await run_job_command(owner, JobVerb(verb))
        assert watch.changes[0] == ("orders", state, R.PENDING)
        assert owner.ledger.offset == 4  # the repaired snapshot is resumed from


# --- 14.18: every refusal names a way forward; pause and stop are idempotent ----------


@pytest.mark.parametrize("state", list(JobState))
@pytest.mark.parametrize("event", sorted(COMMANDS))
def test_every_refused_command_names_what_to_do(state: JobState, event: Event) -> None:
    """A command that does not fit the state is refused naming a command that does."""
    # Issue 14.18: e.g. "cannot pause orders: it is STOPPED" named nothing to do.
    try:
        next_state(state, event, job="orders")
    except CommandRefused as refused:
        assert "`supervisor " in str(refused) and "orders`" in str(refused), str(refused)


@pytest.mark.parametrize("state", list(JobState))
def test_every_retry_and_offset_refusal_names_what_to_do(state: JobState) -> None:
    """`retry` outside a backoff and `offset --set` while active name what the operator can do."""
    assert "`supervisor " in str(retry_refusal("orders", state, in_backoff=False))
    if state not in OFFSET_SETTABLE:
        assert state in ACTIVE
        refused = offset_refusal("orders", state, attempt_ending=False)
        assert "`supervisor pause orders`" in str(refused)


async def test_retry_on_a_running_job_is_refused_naming_restart() -> None:
    """`retry` on a RUNNING job says there is nothing to retry and names `restart`."""
    source = ScriptedSource(available=5)
    async with running_job(_job(), source) as (owner, watch):
        await watch.until(lambda: owner.state is R.RUNNING, within=WITHIN)
        assert "`supervisor restart orders`" in await _refused(owner, "retry")


@pytest.mark.parametrize(("verb", "state"), [("pause", R.PAUSED), ("stop", R.STOPPED)])
async def test_pause_and_stop_are_idempotent(verb: str, state: JobState) -> None:
    """A second `pause` (or `stop`) succeeds, changing nothing: no event, no write."""
    store = InMemorySnapshotStore()
    async with running_job(_job(), ScriptedSource(available=5), store=store) as (owner, watch):
        await watch.until(lambda: owner.state is R.RUNNING, within=WITHIN)
        assert await run_job_command(owner, JobVerb(verb)) is state
        changes, writes = list(watch.changes), store.writes
        assert await run_job_command(owner, JobVerb(verb)) is state
        assert (watch.changes, store.writes) == (changes, writes)


@pytest.mark.parametrize("verb", ["pause", "stop"])
@pytest.mark.parametrize("state", [R.SUSPENDED, R.FAILED, R.FINISHED, R.STOPPED, R.PAUSED])
async def test_pause_or_stop_that_does_not_fit_names_what_to_do(verb: str, state: JobState) -> None:
    """`pause`/`stop` of a job with nothing running is a no-op or a refusal naming a command."""
    store = InMemorySnapshotStore()
    _seed(store, state=state)
    async with running_job(_job(), ScriptedSource(), store=store) as (owner, _):
        try:
            await run_job_command(owner, JobVerb(verb))
        except CommandRefused as refused:
            assert "`supervisor " in str(refused)
        else:
            assert owner.state is (R.STOPPED if verb == "stop" else state)


async def test_a_finished_job_reruns_from_a_chosen_offset() -> None:
    """`offset --set` on a FINISHED job, then `start`: it runs again from that offset."""
    # Issue 14.18: a FINISHED job's offset could not be set ("pause or stop it", both refused).
    sink = RecordingSink()
    source = ScriptedSource(count=20, batch=5)
    async with running_job(_job(), source, sink) as (owner, watch):
        await watch.until(lambda: owner.state is R.FINISHED, within=WITHIN)
        await owner.set_offset(15)
        sink.flushed.clear()
        await owner.start()
        await watch.until(lambda: owner.state is R.FINISHED and source.opens == 2, within=WITHIN)
    assert [record["seq"] for record in sink.flushed] == list(range(15, 20))
