"""The owner of one job: its state, its attempts, and what their outcomes mean.

Each job is driven by exactly one long-lived `JobOwner.run` task. Operator
commands (one method each: `pause`, `resume`, ...) and attempt outcomes reach it as
messages, handled one at a time. The rules are elsewhere: `supervisor.states` decides
every new state and what a command may do, `supervisor.retry` what a failure leads to;
the owner asks them and acts. (An attempt's "opened", when the owner is between
messages, is handled by the attempt task as it posts it: it only moves the state.)

Attempts are run by an *attempt task* (`supervisor.attempt_task`): one task, beside
the owner in its group, that waits out the backoff, takes a start slot, runs one
`Attempt` and posts how it ended. An attempt task is spawned only when none is
alive, and the owner forgets an attempt task only when its "ended" message arrives,
which is after the attempt's source and sink closed. So no timer, callback or
command can ever start a second attempt.

Longer than 400 lines: the owner is one actor. Its state, its attempt task, the
commands waiting for that task to end and the state writes owed all change only in
its one task; split over several objects, "one attempt at a time" and "every state
change is written" would become rules kept by care across modules instead of by
the shape of one.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import assert_never

import anyio
import structlog

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.attempt_task import AttemptTask, AttemptTaskMessage, Ended, Opened
from supervisor.components import DEFAULT_COMPONENTS, Components
from supervisor.config.model import JobConfig
from supervisor.errors import CommandRefused, FinalCheckpointFailed, SnapshotError
from supervisor.failures import describe_error, describe_failure, release_traceback
from supervisor.inbox import Inbox
from supervisor.ledger import JobLedger
from supervisor.observe.counters import JobCounters
from supervisor.owner_commands import (
    Command,
    OwnerCommand,
    Pause,
    Reconfigure,
    Restart,
    Resume,
    Retry,
    SetOffset,
    ShutDown,
    Start,
    Stop,
)
from supervisor.protocols import Offset
from supervisor.retry import backoff_delay, retry_decision
from supervisor.snapshot import FailureRecord
from supervisor.start_slots import StartSlots
from supervisor.states import (
    ACTIVE,
    EVENT_CAUSES,
    NOT_RESUMED_FROM,
    Event,
    JobState,
    healthy_resets_budget,
    initial_state,
    keeps_offset,
    next_state,
    offset_refusal,
    on_reload,
    opened_event,
    retry_refusal,
)

log = structlog.get_logger("supervisor.job_owner")

StateListener = Callable[["JobOwner", JobState, JobState, str | None], None]

PERSIST_RETRY_MAX = 30.0
"""Longest wait between tries of a state write that failed (SPEC §4 rule 7)."""


_Message = AttemptTaskMessage | Command


class JobOwner:
    """Drives one job through its states; `run` is its one owner task."""

    def __init__(
        self,
        config: JobConfig,
        ledger: JobLedger,
        on_change: StateListener,
        *,
        start_slots: StartSlots,
        components: Components = DEFAULT_COMPONENTS,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self._on_change = on_change
        self._slots = start_slots
        self._components = components
        self._rng = rng
        snapshot = ledger.snapshot
        self.state = initial_state(
            snapshot.state if snapshot.generation else None,
            enabled=config.enabled,
            disabled_by_reload=snapshot.disabled,
        )
        ledger.live_state = self.state
        ledger.live_disabled = not config.enabled
        self.attempts = snapshot.attempts
        """Consecutive failed attempts: what has been spent of `retry.max_attempts`."""
        self.failure = snapshot.failure
        """The last real failure (kept while paused or stopped); `status` shows it as the error."""
        self.persist_pending = False
        self.since = time.time()
        if snapshot.since is not None and self.state is snapshot.state:
            self.since = snapshot.since.timestamp()  # a persisted state began before this daemon
        ledger.live_since = datetime.fromtimestamp(self.since, UTC)
        self.cause: str | None = _cause(self.failure) if self.failure else None
        """Why the job last changed state (an operator's command, a failure, a reload)."""
        self._next_retry_wall: float | None = None
        """Wall-clock time the pending retry is due while RETRYING (persisted, so a daemon
        restart waits out the rest of the backoff instead of hitting a failing source)."""
        self._next_retry_loop: float | None = None
        """The same in event-loop time, which the wait uses (None: not converted yet)."""
        if self.state is JobState.RETRYING and snapshot.next_retry_at is not None:
            self._next_retry_wall = snapshot.next_retry_at.timestamp()
        self.final_checkpoint_error: str | None = None
        """Why the last attempt an operator (or the shutdown) stopped ended without its final
        checkpoint: the records since the one before will be read again. None once a new
        attempt starts."""
        self._attempt_task: AttemptTask | None = None
        self._attempt_tasks_started = 0
        self._waiting_for_attempt: list[OwnerCommand] = []
        self._load_error: SnapshotError | None = None
        self._shutting_down = False
        self._inbox: Inbox[_Message] = Inbox()
        self._persisting = False
        """A task is retrying a refused state write (spawned only then: most jobs never are)."""
        self._persist_scope: anyio.CancelScope | None = None
        self.counters = JobCounters(
            snapshot.written_at.timestamp() if snapshot.generation else None
        )
        """What this daemon counted of the job (`supervisor.observe`), across its attempts."""

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def snapshot_path(self) -> Path:
        return self.ledger.path

    @property
    def attempt(self) -> Attempt | None:
        """The attempt alive now, if any."""
        return self._attempt_task.attempt if self._attempt_task else None

    @property
    def next_retry_at(self) -> float | None:
        """Event-loop time of the next retry while waiting out a backoff."""
        return self._attempt_task.retry_at if self._attempt_task else None

    @property
    def error(self) -> str | None:
        """The last real failure, as ``Type: message``; not an operator's or a reload's cause."""
        return _cause(self.failure) if self.failure is not None else None

    def fail_at_start(self, error: SnapshotError) -> None:
        """The snapshot cannot be read: fail before any attempt, naming the path.

        Nothing is written, so an operator can put a good snapshot back (or set
        an offset) and `resume`; resuming reads the snapshot again.
        """
        self._load_error = error
        self.failure = describe_failure(error, attempts=self.attempts, previous=None)
        self.state = next_state(
            JobState.PENDING, Event.GAVE_UP, suspend_on_failure=self.config.suspend_on_failure
        )
        self.ledger.live_state = self.state
        self.cause = str(error)

    # --- the owner task ---------------------------------------------------------

    async def run(
        self,
        tasks: anyio.abc.TaskGroup,
        *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Own the job until the daemon shuts down.

        The job's attempt tasks (and a state-write retry) run in `tasks`, the group this
        owner runs in: a task group of its own per job made stopping thousands of jobs
        measurably slower (bench/README.md, "Measurements behind the code"). An owner
        returns only once its attempt task has ended, so none outlives it.
        """
        self._tasks = tasks
        try:
            self._drive_if_active()
            task_status.started()
            while not (self._shutting_down and self._attempt_task is None):
                await self._handle(await self._inbox.get())
        finally:
            self._inbox.close()
            if self._persist_scope is not None:
                self._persist_scope.cancel()

    # --- commands: each waits until its effect is complete, and returns the state it
    # produced; `CommandRefused` (changing nothing) when it does not fit the job's state.

    async def pause(self) -> JobState:
        """PAUSED, once the attempt has ended after a final checkpoint (already PAUSED: no
        change); `FinalCheckpointFailed` if that checkpoint failed (PAUSED all the same)."""
        return await self._command(Pause())

    async def stop(self) -> JobState:
        """STOPPED, as `pause` does PAUSED."""
        return await self._command(Stop())

    async def resume(self) -> JobState:
        """Run a PAUSED or SUSPENDED job again from its offset, with a fresh retry budget."""
        return await self._command(Resume())

    async def start(self) -> JobState:
        """Run a STOPPED, FINISHED or FAILED job again (a FAILED one from the source's start,
        unless its offset was chosen)."""
        return await self._command(Start())

    async def restart(self) -> JobState:
        """End the attempt (final checkpoint) and begin again, as `start` does."""
        return await self._command(Restart())

    async def retry(self) -> JobState:
        """End the backoff wait of a RETRYING job now."""
        return await self._command(Retry())

    async def set_offset(self, value: Offset) -> JobState:
        """Make `value` the offset the next attempt starts from (a job with no attempt only)."""
        return await self._command(SetOffset(value))

    async def reconfigure(self, job: JobConfig) -> JobState:
        """Take the new definition `job` (a reload changed it); see `_cmd_reconfigure`."""
        return await self._command(Reconfigure(job))

    def shut_down(self) -> None:
        """Daemon stopping: end any attempt after a final checkpoint; keep the state."""
        self._inbox.put(ShutDown())

    async def _command(self, command: Command) -> JobState:
        self._inbox.put(command)
        await command.done.wait()
        if command.error is not None:
            raise command.error
        return self.state if command.state is None else command.state

    async def _handle(self, message: _Message) -> None:
        if isinstance(message, OwnerCommand):
            await self._on_command(message)
        elif message.attempt_task is not self._attempt_task:
            raise AssertionError(f"{self.name}: message from an attempt task that already ended")
        elif isinstance(message, Ended):
            await self._on_attempt_task_ended(message)
        elif message.attempt_task.superseded:
            pass  # an operator or the shutdown already decided: nothing it says counts
        elif isinstance(message, Opened):
            self._transition(self._opened_event())
        else:
            await self._on_healthy()

    # --- attempts -----------------------------------------------------------------

    def _drive_if_active(self) -> None:
        if self.state not in ACTIVE or self._attempt_task is not None or self._shutting_down:
            return
        delay = 0.0
        if self.state is JobState.RETRYING and self.attempts:
            if self._next_retry_wall is None:  # restored from a snapshot that did not say
                self._schedule_retry(backoff_delay(self.attempts, self.config.retry, self._rng))
            if self._next_retry_loop is None:  # restored: the wall clock to loop time
                wait = max(self._next_retry_wall - time.time(), 0.0)  # type: ignore[operator]
                self._next_retry_loop = anyio.current_time() + wait
            delay = max(self._next_retry_loop - anyio.current_time(), 0.0)
            log.info(
                "job.retry_scheduled", job=self.name, attempt=self.attempts, delay=round(delay, 3)
            )
        self._attempt_tasks_started += 1
        self.final_checkpoint_error = None  # about the attempt before: a new one starts
        self._attempt_task = AttemptTask(
            number=self._attempt_tasks_started,
            job=self.config,
            ledger=self.ledger,
            components=self._components,
            slots=self._slots,
            post=self._post,
            retry_at=anyio.current_time() + delay if delay else None,
            counters=self.counters,
            restart=self.state is JobState.RETRYING and self.attempts > 0,
        )
        self._tasks.start_soon(self._attempt_task.run, name=f"attempt_task {self.name}")

    def _schedule_retry(self, delay: float) -> None:
        """The next retry is due in `delay` seconds; the next attempt task waits until then."""
        self._next_retry_loop = anyio.current_time() + delay
        self._next_retry_wall = time.time() + delay

    def _opened_event(self) -> Event:
        return opened_event(self.attempts)

    def _post(self, message: AttemptTaskMessage) -> None:
        """A message from the attempt task. An `Opened` that finds the owner idle (waiting, nothing
        queued) is handled here, in the attempt task's task: it only moves the state, and handling
        it now saves the owner a wake-up and a new wait for every attempt that starts."""
        if (
            isinstance(message, Opened)
            and self._inbox.reader_idle
            and message.attempt_task is self._attempt_task
            and not message.attempt_task.superseded
        ):
            self._transition(self._opened_event())
            return
        try:
            self._inbox.put(message)
        except anyio.BrokenResourceError:
            # The owner was cancelled (the daemon's shutdown timeout) while this attempt task's
            # attempt was closing: no one is left to tell, and nothing left to decide.
            log.info("job.attempt_outlived_owner", job=self.name)

    async def _on_healthy(self) -> None:
        if healthy_resets_budget(self.state, self.attempts):
            log.info("job.recovered", job=self.name, attempts=self.attempts)
            self.attempts, self.failure, self.cause = 0, None, None
            self._transition(Event.HEALTHY)
            await self._persist_quietly()

    async def _on_attempt_task_ended(self, message: Ended) -> None:
        attempt_task, self._attempt_task = message.attempt_task, None
        opened = attempt_task.attempt is not None and attempt_task.attempt.opened
        if attempt_task.superseded and message.error is not None and opened:
            # Records were read, and no final checkpoint covers them. (An attempt that
            # failed before opening read nothing: its late failure just does not count.)
            self._final_checkpoint_failed(message.error)
        for request in self._waiting_for_attempt:
            request.done.set()
        self._waiting_for_attempt.clear()
        if attempt_task.superseded:
            # The operator (or shutdown) already decided; a late failure or end
            # changes neither the state nor the attempt count.
            self._drive_if_active()
            return
        if message.error is not None:
            await self._on_attempt_failed(message.error, ran=attempt_task.attempt is not None)
        elif message.end is AttemptEnd.FINISHED:
            self._transition(Event.SOURCE_ENDED)
            await self._persist_quietly()
        self._drive_if_active()

    def _final_checkpoint_failed(self, error: BaseException) -> None:
        """The attempt told to stop failed instead of ending with a final checkpoint.

        The state stands (the operator wins), but it is not silent: logged, shown by
        `status`, and a waiting `pause` / `stop` says so (exit 1).
        """
        self.final_checkpoint_error = describe_error(error)
        release_traceback(error)
        log.error(
            "job.final_checkpoint_failed",
            job=self.name,
            state=self.state.value,
            error=self.final_checkpoint_error,
        )
        for request in self._waiting_for_attempt:
            if isinstance(request, Pause | Stop) and request.error is None:
                request.error = FinalCheckpointFailed(
                    f"{self.name}: {self.state.name}, but its final checkpoint failed, so the "
                    f"records since the last checkpoint will be read again: "
                    f"{self.final_checkpoint_error}"
                )

    async def _on_attempt_failed(self, error: BaseException, *, ran: bool) -> None:
        if ran:  # one cancelled before it ran does not spend the budget
            self.attempts += 1
        decision = retry_decision(
            error, attempts=self.attempts, policy=self.config.retry, random=self._rng
        )
        self.failure = describe_failure(error, attempts=self.attempts, previous=self.failure)
        release_traceback(error)  # the record has its text: frees the frames without the GC
        self.cause = _cause(self.failure)
        log.warning(
            "job.attempt_failed",
            job=self.name,
            attempt=self.attempts,
            error=self.cause,
            fatal=decision.fatal,
            budget_spent=decision.budget_spent,
        )
        if decision.delay is None:
            self._transition(Event.GAVE_UP)
        else:
            self._transition(Event.RETRYABLE_FAILURE)
            self._schedule_retry(decision.delay)  # before the write, which records when it is due
        await self._persist_quietly()

    # --- operator commands -----------------------------------------------------------

    async def _on_command(self, request: Command) -> None:
        if self._shutting_down and not isinstance(request, ShutDown):
            request.error = CommandRefused(f"{self.name}: the daemon is shutting down")
            request.done.set()
            return
        try:
            settle = await self._run_command(request)
        except CommandRefused as exc:
            request.error = exc
            settle = False
        request.state = self.state
        if settle and self._attempt_task is not None:
            self._waiting_for_attempt.append(request)
        else:
            request.done.set()
        self._drive_if_active()

    async def _run_command(self, command: Command) -> bool:
        """Do `command`; True if it is complete only once the attempt task has ended."""
        match command:
            case ShutDown():
                return self._cmd_shutdown()
            case Pause():
                return await self._cmd_pause()
            case Stop():
                return await self._cmd_stop()
            case Resume():
                return await self._cmd_resume()
            case Start():
                return await self._cmd_start()
            case Restart():
                return await self._cmd_restart()
            case Retry():
                return await self._cmd_retry()
            case SetOffset(value=value):
                return await self._cmd_set_offset(value)
            case Reconfigure(job=job):
                return await self._cmd_reconfigure(job)
            case _:
                assert_never(command)

    def _cmd_shutdown(self) -> bool:
        self._shutting_down = True
        self._stop_attempt()
        return False

    async def _cmd_pause(self) -> bool:
        if self.state is JobState.PAUSED:
            return True  # idempotent; reported once any attempt still stopping has ended
        self._transition(Event.PAUSE, cause="paused by operator")
        self._stop_attempt()
        await self._persist_quietly()
        return True

    async def _cmd_stop(self) -> bool:
        if self.state is JobState.STOPPED:
            return True  # idempotent, as pause
        self._transition(Event.STOP, cause="stopped by operator")
        self._stop_attempt()
        await self._persist_quietly()
        return True

    async def _cmd_resume(self) -> bool:
        self._check(Event.RESUME)
        await self._read_snapshot_again()  # refused before any transition: events match state
        self._transition(Event.RESUME, cause="resumed by operator")
        await self._begin_again(keep_offset=True)
        return False

    async def _cmd_start(self) -> bool:
        self._check(Event.START)
        keep = self._keeps_offset()
        await self._read_snapshot_again()
        self._transition(Event.START, cause="started by operator")
        await self._begin_again(keep_offset=keep)
        return False

    async def _cmd_restart(self) -> bool:
        keep = self._keeps_offset()
        await self._read_snapshot_again()
        self._stop_attempt()
        self._transition(Event.RESTART, cause="restarted by operator")
        await self._begin_again(keep_offset=keep)
        return False

    def _check(self, event: Event) -> None:
        """Raise CommandRefused, changing nothing, if `event` does not fit the state."""
        next_state(
            self.state, event, suspend_on_failure=self.config.suspend_on_failure, job=self.name
        )

    def _keeps_offset(self) -> bool:
        return keeps_offset(self.state, snapshot_unreadable=self._load_error is not None)

    async def _cmd_reconfigure(self, job: JobConfig) -> bool:
        """Take a new definition: an active job restarts on it; any other keeps its
        state and uses it when next started or resumed. A job the file now enables
        starts, as it would at the daemon's next start."""
        was_enabled, self.config = self.config.enabled, job
        event = on_reload(self.state, was_enabled=was_enabled, enabled=job.enabled)
        if event is Event.START:
            self._transition(Event.START, cause="enabled by reload")
            await self._begin_again(keep_offset=True)
            return False
        if event is Event.STOP:
            self._transition(Event.STOP, cause="disabled by reload")
            self.ledger.live_disabled = True
            self._stop_attempt()
            await self._persist_quietly()
            return True
        if event is Event.RESTART:
            self._stop_attempt()
            self._transition(Event.RESTART, cause="definition changed by reload")
        return False

    async def _cmd_retry(self) -> bool:
        attempt_task = self._attempt_task
        in_backoff = attempt_task is not None and attempt_task.retry_at is not None
        if refused := retry_refusal(self.name, self.state, in_backoff=in_backoff):
            raise CommandRefused(refused)
        assert attempt_task is not None  # in its backoff
        attempt_task.retry_now()
        return False

    async def _cmd_set_offset(self, value: Offset) -> bool:
        ending = self._attempt_task is not None
        if refused := offset_refusal(self.name, self.state, attempt_ending=ending):
            raise CommandRefused(refused)
        old = self.ledger.offset
        if self.state in NOT_RESUMED_FROM and not self.ledger.snapshot.offset_chosen:
            # A FAILED job is not resumed from its snapshot: keep that one aside.
            await self.ledger.set_aside("failed")
        try:
            # Chosen: the next attempt starts here, even over an offset-keeping sink's own.
            await self.ledger.write(offset=value, offset_chosen=True)
        except (SnapshotError, ValueError) as exc:  # ValueError: not an offset TOML can hold
            fresh = (
                " (it stays FAILED and `start` begins afresh)" if old != self.ledger.offset else ""
            )
            raise CommandRefused(f"offset of {self.name} not set{fresh}: {exc}") from exc
        self._load_error = None
        log.warning("job.offset_set", job=self.name, old=old, offset=value)
        return False

    async def _begin_again(self, *, keep_offset: bool) -> None:
        """Leave a stopped/failed/suspended state: a fresh budget, maybe a fresh offset."""
        self.attempts, self.failure = 0, None
        if not keep_offset and not self.ledger.snapshot.offset_chosen:
            # FAILED is not resumed from: the old snapshot is set aside, never deleted, and
            # the source's start is chosen over an offset-keeping sink's own offset too.
            await self.ledger.set_aside("failed", offset_chosen=True)
        await self._persist_quietly()

    async def _read_snapshot_again(self) -> None:
        """If the snapshot could not be read, read it again (an operator may have repaired
        it); still unreadable: CommandRefused, and the job stays as it is."""
        if self._load_error is None:
            return
        try:
            await self.ledger.reload()
        except SnapshotError as exc:
            self._load_error = exc
            self.failure = describe_failure(exc, attempts=self.attempts, previous=None)
            self.cause = str(exc)
            raise CommandRefused(f"{self.name}: {exc}") from exc
        self._load_error = None

    def _stop_attempt(self) -> None:
        attempt_task = self._attempt_task
        if attempt_task is None:
            return
        attempt_task.superseded = True
        if attempt_task.attempt is not None:
            attempt_task.attempt.request_stop()  # graceful: final checkpoint
        else:
            attempt_task.scope.cancel()  # still in backoff or waiting for a slot: never ran

    # --- state and persistence ---------------------------------------------------------

    def _transition(self, event: Event, cause: str | None = None) -> None:
        new = next_state(
            self.state, event, suspend_on_failure=self.config.suspend_on_failure, job=self.name
        )
        old, self.state = self.state, new
        self.ledger.live_state = new
        if cause is None and old is not new:
            cause = EVENT_CAUSES.get(event)  # a stay in one state keeps the cause it had
        if cause is not None:
            self.cause = cause
        if old is not new:
            self.ledger.live_disabled = False  # only the reload that disables sets it
            self.since = time.time()
            self.ledger.live_since = datetime.fromtimestamp(self.since, UTC)
            if new is not JobState.RETRYING:
                self._next_retry_wall = self._next_retry_loop = None
            self._on_change(self, old, new, self.cause)

    async def _persist_quietly(self) -> None:
        """Write the state; if the disk refuses, hold it in memory and keep trying."""
        try:
            await self._write_state()
        except SnapshotError as exc:
            if not self.persist_pending:
                log.error(  # noqa: TRY400 - the cause is in `error`; no traceback wanted
                    "job.persist_failed", job=self.name, state=self.state.value, error=str(exc)
                )
            self.persist_pending = True
            if not self._persisting:
                self._persisting = True
                self._persist_scope = anyio.CancelScope()
                self._tasks.start_soon(
                    self._persist_until_written, self._persist_scope, name=f"persist {self.name}"
                )

    async def _write_state(self) -> None:
        retry_at = self._next_retry_wall
        await self.ledger.write(
            state=self.state,
            attempts=self.attempts,
            failure=self.failure,
            next_retry_at=None if retry_at is None else datetime.fromtimestamp(retry_at, UTC),
        )
        if self.persist_pending:
            log.info("job.persist_recovered", job=self.name, state=self.state.value)
        self.persist_pending = False

    def _write_owed(self) -> bool:
        # A call, not the attribute, so type checkers see it can change across awaits.
        return self.persist_pending

    async def _persist_until_written(self, scope: anyio.CancelScope) -> None:
        """Retry a refused state write with backoff until one gets through (or the owner
        ends, which cancels `scope`)."""
        delay = 0.5
        try:
            with scope:
                while self._write_owed():
                    await anyio.sleep(delay)
                    if not self._write_owed():
                        break  # a later write already got through
                    try:
                        await self._write_state()
                    except SnapshotError:
                        delay = min(delay * 2, PERSIST_RETRY_MAX)
        finally:
            self._persisting = False
            self._persist_scope = None


def _cause(failure: FailureRecord) -> str:
    return f"{failure.error_type}: {failure.message}"
