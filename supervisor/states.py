"""Job states, their groups, the one table of allowed transitions, and every state rule.

Nothing changes a job's state except `next_state`, which is pure: it returns
the state an event leads to from the current one, or raises `CommandRefused`
(for operator commands) / `IllegalTransition` (a bug) when the table has no
such edge. The other rules a job's owner asks before it acts are here too, as
sets where they are data and small pure functions where they need more than
the state: the state a job starts in (`initial_state`, `restored_state`), which
event an opened attempt sends (`opened_event`), whether proving healthy resets
the retry budget (`healthy_resets_budget`), whether `retry` and `offset --set`
fit (`retry_refusal`, `offset_refusal`), whether leaving a state keeps the
offset (`keeps_offset`), and what a reload does (`on_reload`).
"""

from __future__ import annotations

import enum

from supervisor.errors import CommandRefused


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

RETRY_NOW = frozenset({JobState.RETRYING})
"""States `retry` accepts (and then only while the job waits out its backoff)."""

OFFSET_SETTABLE = frozenset(
    {JobState.PAUSED, JobState.SUSPENDED, JobState.STOPPED, JobState.FAILED, JobState.FINISHED}
)
"""States `offset --set` accepts: no attempt runs, and one starts only when told to."""

NOT_RESUMED_FROM = frozenset({JobState.FAILED})
"""States whose snapshot the next attempt does not resume from (SPEC §4): leaving one
begins afresh from the source's start, and the old snapshot is set aside, never deleted."""


def initial_state(
    persisted: JobState | None, *, enabled: bool, disabled_by_reload: bool
) -> JobState:
    """The state a job takes when the daemon starts: from its file and its snapshot.

    `persisted` is the state in its snapshot (None: it has never run). A job its file
    disables is STOPPED. One a reload stopped by disabling it (still STOPPED: an
    operator's stop survives a restart) starts once its file enables it again, as a
    job that has never run; any other comes back as `restored_state` says.
    """
    if not enabled:
        return JobState.STOPPED
    if persisted is None or (disabled_by_reload and persisted is JobState.STOPPED):
        return JobState.PENDING
    return restored_state(persisted)


def restored_state(persisted: JobState) -> JobState:
    """The state a job takes when the daemon starts with this state on disk.

    RETRYING stays RETRYING: the job has failures to pay off and waits out the rest of
    its backoff (its count and next-retry time are kept); calling it PENDING would hide
    both, and it must prove healthy before it is RUNNING again.
    """
    if persisted in PERSISTED or persisted is JobState.RETRYING:
        return persisted
    return JobState.PENDING


def keeps_offset(state: JobState, *, snapshot_unreadable: bool) -> bool:
    """Whether `start` or `restart` from `state` resumes from the snapshot's offset.

    Not from FAILED (`NOT_RESUMED_FROM`), unless the snapshot could not be read: then
    the snapshot the operator repaired is the one to use.
    """
    return state not in NOT_RESUMED_FROM or snapshot_unreadable


class Event(enum.StrEnum):
    """What can happen to a job. Operator commands are the lowercase verbs of the CLI."""

    OPENED = "opened"
    """An attempt's source opened: the attempt is really running."""
    OPENED_OWING = "opened_owing"
    """An attempt opened while failed attempts are still counted: not yet proved healthy."""
    HEALTHY = "healthy"
    """Running `retry.reset_after` with a checkpoint since the last failure."""
    RETRYABLE_FAILURE = "retryable_failure"
    """An attempt failed and the retry budget is not spent."""
    GAVE_UP = "gave_up"
    """A fatal error, the budget spent, or an unreadable snapshot."""
    SOURCE_ENDED = "source_ended"
    """A bounded source reached its end; the final checkpoint is written."""
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    START = "start"
    RESTART = "restart"


def opened_event(failed_attempts: int) -> Event:
    """The event an attempt whose source opened sends. With failed attempts still
    counted the job has not proved healthy (a reload or a restart may have made it
    PENDING), so it is RETRYING, not RUNNING."""
    return Event.OPENED_OWING if failed_attempts else Event.OPENED


def healthy_resets_budget(state: JobState, failed_attempts: int) -> bool:
    """Whether an attempt proving healthy is news: failed attempts are still counted, or
    the job is RETRYING. Then the count goes back to 0 and `Event.HEALTHY` makes it
    RUNNING (SPEC §4 rule 4); a RUNNING job with nothing owed has nothing to reset."""
    return bool(failed_attempts) or state is JobState.RETRYING


EVENT_CAUSES: dict[Event, str] = {
    Event.OPENED: "attempt opened",
    Event.OPENED_OWING: "attempt opened, not yet proved healthy",
    Event.HEALTHY: "healthy again: retry budget reset",
    Event.SOURCE_ENDED: "source reached its end",
}
"""Why the state changed, for the events nothing else explains. Operator commands and
reloads pass their own cause (`paused by operator`), failures the error they carry:
without these, a job started by an operator would still say so once finished."""


class IllegalTransition(Exception):
    """The transition table has no edge for this state and event: a bug in the engine."""


# The one table. GAVE_UP leads to SUSPENDED or FAILED by the job's
# suspend_on_failure, so it is resolved in `next_state`, not stored here.
_P, _RN, _RT, _PA, _SU, _FA, _ST, _FI = (
    JobState.PENDING,
    JobState.RUNNING,
    JobState.RETRYING,
    JobState.PAUSED,
    JobState.SUSPENDED,
    JobState.FAILED,
    JobState.STOPPED,
    JobState.FINISHED,
)
TRANSITIONS: dict[tuple[JobState, Event], JobState] = {
    (_P, Event.OPENED): _RN,
    (_RT, Event.OPENED): _RT,  # still RETRYING until it has proved healthy
    **{(state, Event.OPENED_OWING): _RT for state in (_P, _RT)},
    (_RT, Event.HEALTHY): _RN,
    (_RN, Event.HEALTHY): _RN,
    **{(state, Event.RETRYABLE_FAILURE): _RT for state in (_P, _RN, _RT)},
    **{(state, Event.SOURCE_ENDED): _FI for state in (_RN, _RT)},
    **{(state, Event.PAUSE): _PA for state in (_P, _RN, _RT, _PA)},  # PAUSED: a no-op
    **{(state, Event.RESUME): _P for state in (_PA, _SU)},
    **{(state, Event.STOP): _ST for state in (_P, _RN, _RT, _PA, _SU, _ST)},  # STOPPED: a no-op
    **{(state, Event.START): _P for state in (_ST, _FI, _FA)},
    **{(state, Event.RESTART): _P for state in JobState},
}
GAVE_UP_FROM = frozenset({_P, _RN, _RT})

COMMANDS = frozenset({Event.PAUSE, Event.RESUME, Event.STOP, Event.START, Event.RESTART})
"""Events an operator sends; refusing one is a `CommandRefused`, not a bug."""


def next_state(
    state: JobState, event: Event, *, suspend_on_failure: bool = False, job: str = "the job"
) -> JobState:
    """The state `event` leads to from `state`; raises if the table has no such edge.

    An operator command that does not fit raises `CommandRefused` with a message
    that names `job` and says what to do instead; any other missing edge is a bug.
    """
    if event is Event.GAVE_UP and state in GAVE_UP_FROM:
        return JobState.SUSPENDED if suspend_on_failure else JobState.FAILED
    target = TRANSITIONS.get((state, event))
    if target is not None:
        return target
    if event in COMMANDS:
        raise CommandRefused(refusal(job, state, event))
    raise IllegalTransition(f"{job}: no transition from {state.value} on {event.value}")


def refusal(job: str, state: JobState, event: Event) -> str:
    """Why an operator command does not fit `state`, and what the operator can do instead."""
    if event is Event.RESUME and state is JobState.RETRYING:
        return (
            f"{job} is RETRYING: use `supervisor retry {job}` to retry now "
            f"or `supervisor pause {job}` to pause it"
        )
    if event is Event.RESUME and state in ACTIVE:
        return (
            f"{job} is {state.name}, not paused or suspended: nothing to resume; "
            f"use `supervisor restart {job}` to restart it"
        )
    if event is Event.START and state in ACTIVE:
        return f"{job} is already {state.name}: use `supervisor restart {job}` to restart it"
    if event in (Event.RESUME, Event.START, Event.PAUSE, Event.STOP):
        return f"{job} is {state.name}: {_way_forward(job, state)}"
    return f"cannot {event.value} {job}: it is {state.name}"  # pragma: no cover - no such edge


def retry_refusal(job: str, state: JobState, *, in_backoff: bool) -> str | None:
    """Why `retry` does not fit, or None when it does: the job is RETRYING (`RETRY_NOW`)
    and waiting out its backoff (`in_backoff`: no attempt started yet)."""
    if state in RETRY_NOW and in_backoff:
        return None
    if state is JobState.RETRYING:
        return (
            f"{job} is RETRYING with its retry attempt already running, not waiting out a "
            f"backoff: use `supervisor restart {job}` to restart it"
        )
    if state is JobState.RUNNING:
        return (
            f"{job} is RUNNING, not waiting to retry: nothing to retry; "
            f"use `supervisor restart {job}` to restart it"
        )
    return f"{job} is {state.name}, not waiting to retry: {_way_forward(job, state)}"


def offset_refusal(job: str, state: JobState, *, attempt_ending: bool) -> str | None:
    """Why `offset --set` does not fit, or None when it does: no attempt runs or is
    about to (`OFFSET_SETTABLE`), and the last one has ended (`attempt_ending`: it is
    still writing its final checkpoint)."""
    if state not in OFFSET_SETTABLE:
        return (
            f"{job} is {state.name}: use `supervisor pause {job}` or `supervisor stop {job}` "
            "before setting its offset"
        )
    if attempt_ending:
        return (
            f"{job} is {state.name} but its last attempt is still ending "
            f"(final checkpoint): run `supervisor offset {job} --set` again once it has"
        )
    return None


def on_reload(state: JobState, *, was_enabled: bool, enabled: bool) -> Event | None:
    """The event a reload that changed a job's definition sends, or None: it keeps its
    state and uses the new definition when next started or resumed.

    A job the file now enables starts (STOPPED by the file before), as it would at the
    daemon's next start; an active job the file now disables stops; any other active
    job restarts on the new definition.
    """
    if enabled and not was_enabled and state is JobState.STOPPED:
        return Event.START
    if not enabled and state in ACTIVE:
        return Event.STOP
    if state in ACTIVE:
        return Event.RESTART
    return None


def _way_forward(job: str, state: JobState) -> str:
    """What moves a job on from `state`, as the operator would type it."""
    if state is JobState.PENDING:
        return f"it starts when a start slot is free; `supervisor pause {job}` to hold it"
    if state in (JobState.RUNNING, JobState.RETRYING):
        return f"use `supervisor pause {job}` or `supervisor stop {job}` to stop it"
    if state is JobState.PAUSED:
        return f"use `supervisor resume {job}` to resume it"
    if state is JobState.SUSPENDED:
        return (
            f"nothing runs; fix the cause, then `supervisor resume {job}` "
            f"(or `supervisor stop {job}` to leave it stopped)"
        )
    if state is JobState.FAILED:
        return f"nothing runs; use `supervisor start {job}` to begin afresh from the source's start"
    if state is JobState.FINISHED:
        return (
            f"its source has ended; use `supervisor start {job}` to run it again, after "
            f"`supervisor offset {job} --set VALUE` to choose where it begins"
        )
    return f"use `supervisor start {job}` to start it"
