"""The owner of one job: its state, its attempts, and what their outcomes mean.

Each job is driven by exactly one long-lived `JobRunner.run` task. Attempts
run one at a time inside it: a new one is built only after the previous
`Attempt.run` has returned or raised, which is after its source and sink
closed.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

import anyio
import structlog

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.config.model import JobConfig
from supervisor.errors import SnapshotError
from supervisor.ledger import JobLedger
from supervisor.snapshot import FailureRecord
from supervisor.states import ACTIVE, JobState, restored_state

log = structlog.get_logger("supervisor.job")

StateListener = Callable[["JobRunner", JobState, JobState, str | None], None]


class JobRunner:
    """Drives one job through its states; `run` is its one owner task."""

    def __init__(self, config: JobConfig, ledger: JobLedger, on_change: StateListener) -> None:
        self.config = config
        self.ledger = ledger
        self._on_change = on_change
        persisted = ledger.snapshot.state if ledger.snapshot.generation else None
        if persisted is not None:
            self.state = restored_state(persisted)
        else:
            self.state = JobState.PENDING if config.enabled else JobState.STOPPED
        self.since = time.time()
        """Wall-clock time of the last state change (for display only)."""
        self.attempt: Attempt | None = None
        self._attempts_started = 0
        self._shutting_down = False
        self._changed = anyio.Event()

    def fail_at_start(self, error: Exception) -> None:
        """The snapshot cannot be read: the job fails before any attempt, naming the path."""
        self._transition(JobState.FAILED, str(error))

    @property
    def name(self) -> str:
        return self.config.name

    async def run(self) -> None:
        """Run attempts while the job is active; return when the daemon shuts down."""
        while not self._shutting_down:
            if self.state in ACTIVE:
                await self._run_one_attempt()
            else:
                await self._changed.wait()
                self._changed = anyio.Event()

    def shut_down(self) -> None:
        """Daemon stopping: end the attempt after a final checkpoint, keep the state."""
        self._shutting_down = True
        if self.attempt is not None:
            self.attempt.request_stop()
        self._changed.set()

    async def _run_one_attempt(self) -> None:
        self._attempts_started += 1
        attempt = Attempt(self.config, self.ledger, self._attempts_started)
        self.attempt = attempt
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._mark_running_when_open, attempt)
                try:
                    end = await attempt.run()
                finally:
                    tg.cancel_scope.cancel()
        except Exception as exc:  # noqa: BLE001 - every attempt failure is classified here
            await self._fail(exc)
            return
        finally:
            self.attempt = None
        if end is AttemptEnd.FINISHED:
            await self._persist(JobState.FINISHED)
        # STOPPED while shutting down: the state on disk stays active, so the
        # job comes back PENDING and resumes from the final checkpoint.

    async def _mark_running_when_open(self, attempt: Attempt) -> None:
        await attempt.opened_event.wait()
        self._transition(JobState.RUNNING)

    async def _fail(self, error: Exception) -> None:
        now = datetime.now(UTC)
        failure = FailureRecord(
            attempts=1,
            error_type=_qualified_name(type(error)),
            message=str(error),
            traceback="".join(traceback.format_exception(error)),
            first_failure_at=now,
            last_failure_at=now,
        )
        log.error(
            "job.attempt_failed", job=self.name, error=f"{failure.error_type}: {failure.message}"
        )
        await self._persist(JobState.FAILED, failure=failure, cause=failure.message)

    async def _persist(
        self, state: JobState, *, failure: FailureRecord | None = None, cause: str | None = None
    ) -> None:
        self._transition(state, cause)
        try:
            await self.ledger.write(state=state, failure=failure)
        except SnapshotError as exc:
            log.error("job.persist_failed", job=self.name, state=state.value, error=str(exc))

    def _transition(self, new: JobState, cause: str | None = None) -> None:
        old, self.state = self.state, new
        if old is new:
            return
        self.since = time.time()
        self._on_change(self, old, new, cause)
        self._changed.set()


def _qualified_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
