"""The state machine as data: the transition table, its refusals, and the other state rules."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.errors import CommandRefused
from supervisor.states import (
    ACTIVE,
    COMMANDS,
    NOT_RESUMED_FROM,
    OFFSET_SETTABLE,
    PERSISTED,
    RETRY_NOW,
    TRANSITIONS,
    Event,
    IllegalTransition,
    JobState,
    healthy_resets_budget,
    initial_state,
    keeps_offset,
    next_state,
    offset_refusal,
    on_reload,
    opened_event,
    restored_state,
    retry_refusal,
)


def test_every_state_is_either_active_or_persisted() -> None:
    """ACTIVE and PERSISTED split the eight states between them."""
    assert set(JobState) == ACTIVE | PERSISTED
    assert not ACTIVE & PERSISTED


@given(st.sampled_from(JobState), st.sampled_from(Event), st.booleans())
def test_next_state_follows_the_table_or_raises(
    state: JobState, event: Event, suspend: bool
) -> None:
    """next_state gives a table entry, else CommandRefused (commands) or IllegalTransition."""
    try:
        new = next_state(state, event, suspend_on_failure=suspend, job="orders")
    except CommandRefused as exc:
        assert event in COMMANDS
        assert "orders" in str(exc)
    except IllegalTransition:
        assert event not in COMMANDS
    else:
        if event is Event.GAVE_UP:
            assert new is (JobState.SUSPENDED if suspend else JobState.FAILED)
        else:
            assert TRANSITIONS[(state, event)] is new


def test_giving_up_suspends_only_with_suspend_on_failure() -> None:
    """A job that cannot recover is SUSPENDED with suspend_on_failure, FAILED without."""
    assert (
        next_state(JobState.RUNNING, Event.GAVE_UP, suspend_on_failure=True) is JobState.SUSPENDED
    )
    assert next_state(JobState.RUNNING, Event.GAVE_UP) is JobState.FAILED


def test_resume_on_retrying_names_retry_and_pause() -> None:
    """`resume` on a RETRYING job is refused with a message naming both alternatives."""
    with pytest.raises(CommandRefused) as refused:
        next_state(JobState.RETRYING, Event.RESUME, job="orders")
    assert "supervisor retry orders" in str(refused.value)
    assert "supervisor pause orders" in str(refused.value)


@pytest.mark.parametrize("state", sorted(PERSISTED))
def test_persisted_states_survive_a_restart(state: JobState) -> None:
    """PAUSED, SUSPENDED, FAILED, STOPPED and FINISHED come back as they were."""
    assert restored_state(state) is state


@pytest.mark.parametrize("state", sorted(ACTIVE - {JobState.RETRYING}))
def test_active_states_come_back_pending(state: JobState) -> None:
    """PENDING and RUNNING come back PENDING after a daemon restart."""
    assert restored_state(state) is JobState.PENDING


def test_retrying_comes_back_retrying() -> None:
    """A RETRYING job still owes its backoff and its proof of health after a restart."""
    assert restored_state(JobState.RETRYING) is JobState.RETRYING


def test_no_failure_event_leaves_an_operator_state() -> None:
    """Failures have no edge out of PAUSED or STOPPED: the operator's decision stands."""
    for state in (JobState.PAUSED, JobState.STOPPED):
        for event in (Event.RETRYABLE_FAILURE, Event.GAVE_UP, Event.OPENED, Event.SOURCE_ENDED):
            with pytest.raises(IllegalTransition):
                next_state(state, event)


# --- the rules an owner asks before it acts -------------------------------------------------

states = st.sampled_from(JobState)


@given(states, st.booleans())
def test_retry_fits_only_a_job_waiting_out_its_backoff(state: JobState, in_backoff: bool) -> None:
    """`retry` is accepted only while RETRYING with no attempt started; any refusal names
    the job and a command that does fit."""
    refused = retry_refusal("orders", state, in_backoff=in_backoff)
    if state is JobState.RETRYING and in_backoff:
        assert refused is None
    else:
        assert refused is not None
        assert refused.startswith("orders is ") and "`supervisor " in refused


def test_retry_now_states_are_active() -> None:
    """Only an active job can be waiting to retry."""
    assert RETRY_NOW <= ACTIVE


@given(states, st.booleans())
def test_offset_is_set_only_when_no_attempt_runs_or_ends(state: JobState, ending: bool) -> None:
    """`offset --set` fits a state no attempt runs in and once the last attempt has ended;
    an active job is told to pause or stop first, an ending one to try again."""
    refused = offset_refusal("orders", state, attempt_ending=ending)
    if state in ACTIVE:
        assert refused is not None and "`supervisor pause orders`" in refused
    elif ending:
        assert refused is not None and "still ending" in refused
        assert "`supervisor offset orders --set`" in refused
    else:
        assert refused is None


def test_offset_settable_states_are_the_inactive_ones() -> None:
    """Every state without an attempt running or about to accepts `offset --set`."""
    assert set(JobState) - ACTIVE == OFFSET_SETTABLE


@given(states, st.booleans())
def test_only_failed_begins_afresh_unless_its_snapshot_was_unreadable(
    state: JobState, unreadable: bool
) -> None:
    """`start` / `restart` resume from the snapshot's offset, except from FAILED (SPEC §4),
    where only a snapshot that could not be read (and was repaired) is used."""
    expected = state is not JobState.FAILED or unreadable
    assert keeps_offset(state, snapshot_unreadable=unreadable) is expected
    assert (state in NOT_RESUMED_FROM) is (state is JobState.FAILED)


@given(states, st.booleans(), st.booleans())
def test_a_reload_sends_only_events_the_table_allows(
    state: JobState, was_enabled: bool, enabled: bool
) -> None:
    """Whatever a reload decides is an edge of the transition table, never a refusal."""
    event = on_reload(state, was_enabled=was_enabled, enabled=enabled)
    if event is not None:
        assert (state, event) in TRANSITIONS


@given(states, st.booleans(), st.booleans())
def test_a_reload_that_disables_a_job_leaves_nothing_running(
    state: JobState, was_enabled: bool, enabled: bool
) -> None:
    """A job the file disables ends up in a state with no attempt; one it keeps enabled
    and active restarts on the new definition; one it newly enables from STOPPED starts;
    any other keeps its state."""
    event = on_reload(state, was_enabled=was_enabled, enabled=enabled)
    after = state if event is None else next_state(state, event)
    if not enabled:
        assert after not in ACTIVE
        assert event is (Event.STOP if state in ACTIVE else None)
    elif state in ACTIVE:
        assert event is Event.RESTART
    elif state is JobState.STOPPED and not was_enabled:
        assert event is Event.START and after is JobState.PENDING
    else:
        assert event is None


@given(st.none() | states, st.booleans(), st.booleans())
def test_the_initial_state_follows_file_then_snapshot(
    persisted: JobState | None, enabled: bool, disabled_by_reload: bool
) -> None:
    """A disabled job is STOPPED; one never run, or STOPPED only by a reload's disabling,
    is PENDING; any other is restored; and no job starts RUNNING (it has to open first)."""
    state = initial_state(persisted, enabled=enabled, disabled_by_reload=disabled_by_reload)
    if not enabled:
        assert state is JobState.STOPPED
    elif persisted is None or (disabled_by_reload and persisted is JobState.STOPPED):
        assert state is JobState.PENDING
    else:
        assert state is restored_state(persisted)
    assert state is not JobState.RUNNING


def test_an_operator_stop_survives_a_restart() -> None:
    """STOPPED by an operator stays STOPPED; STOPPED by a reload that disabled the job
    starts again once the file enables it."""
    assert initial_state(JobState.STOPPED, enabled=True, disabled_by_reload=False) is (
        JobState.STOPPED
    )
    assert initial_state(JobState.STOPPED, enabled=True, disabled_by_reload=True) is (
        JobState.PENDING
    )


@given(st.integers(0, 10_000))
def test_an_opened_attempt_runs_only_with_no_failures_owed(failed_attempts: int) -> None:
    """An attempt that opens makes a PENDING job RUNNING only when no failed attempt is
    still counted; otherwise it is RETRYING until proved healthy."""
    after = next_state(JobState.PENDING, opened_event(failed_attempts))
    assert after is (JobState.RUNNING if failed_attempts == 0 else JobState.RETRYING)


@given(states, st.integers(0, 10_000))
def test_proving_healthy_resets_only_what_is_owed(state: JobState, failed_attempts: int) -> None:
    """Healthy resets the budget when failures are counted or the job is RETRYING, and
    then the table takes the job (if RUNNING or RETRYING) to RUNNING."""
    resets = healthy_resets_budget(state, failed_attempts)
    assert resets is (failed_attempts > 0 or state is JobState.RETRYING)
    if resets and state in (JobState.RUNNING, JobState.RETRYING):
        assert next_state(state, Event.HEALTHY) is JobState.RUNNING
