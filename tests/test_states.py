"""The state machine as data: the transition table and its refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.errors import CommandRefused
from supervisor.states import (
    ACTIVE,
    COMMANDS,
    PERSISTED,
    TRANSITIONS,
    Event,
    IllegalTransition,
    JobState,
    next_state,
    restored_state,
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
