"""Job states, their groups, and the one table of allowed transitions.

Nothing changes a job's state except `next_state`, which is pure: it returns
the state an event leads to from the current one, or raises `CommandRefused`
(for operator commands) / `IllegalTransition` (a bug) when the table has no
such edge.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """The eight states of a job (SPEC §4)."""

    PENDING = "pending"
    """Waiting for a start slot."""
    RUNNING = "running"
    """An attempt is running and healthy."""
    RETRYING = "retrying"
    """The last attempt failed retryably: waiting out the backoff, or not yet proved healthy."""
    PAUSED = "paused"
    """Paused by an operator."""
    SUSPENDED = "suspended"
    """Failed with suspend_on_failure: snapshot kept, cause recorded, resumable."""
    FAILED = "failed"
    """Failed without suspend_on_failure: cause recorded; `start` begins afresh."""
    STOPPED = "stopped"
    """Stopped by an operator after a final checkpoint."""
    FINISHED = "finished"
    """A bounded source reached its end; final checkpoint written."""


ACTIVE = frozenset({JobState.PENDING, JobState.RUNNING, JobState.RETRYING})
"""States in which the job wants an attempt running (or about to run)."""

PERSISTED = frozenset(
    {JobState.PAUSED, JobState.SUSPENDED, JobState.FAILED, JobState.STOPPED, JobState.FINISHED}
)
"""States that survive a daemon restart as they are; the active ones come back PENDING."""

FAILURES = frozenset({JobState.SUSPENDED, JobState.FAILED})
"""States that carry a failure cause and make `supervisor status` exit 3."""

RESTARTABLE = frozenset({JobState.STOPPED, JobState.FINISHED, JobState.FAILED})
"""States `start` accepts."""


def restored_state(persisted: JobState) -> JobState:
    """The state a job takes when the daemon starts with this state on disk."""
    return persisted if persisted in PERSISTED else JobState.PENDING
