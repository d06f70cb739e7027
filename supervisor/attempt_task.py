"""An attempt task: one backoff wait, one start slot, one attempt, and what it reports.

A job's owner (`supervisor.job_owner.JobOwner`) starts an attempt task only when none is
alive, and forgets it only when the attempt task's `Ended` message arrives, which
is posted after the attempt's source and sink have closed. That is what makes
"one attempt per job at a time" structural rather than a matter of care.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.components import Components
from supervisor.config.model import JobConfig
from supervisor.ledger import JobLedger
from supervisor.observe.counters import JobCounters
from supervisor.start_slots import StartSlots


@dataclass(frozen=True, slots=True)
class Ended:
    """The attempt task is done: the attempt ended (`end`), failed (`error`), or never ran."""

    attempt_task: AttemptTask
    end: AttemptEnd | None
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class Opened:
    """The attempt's source opened: it really runs now."""

    attempt_task: AttemptTask


@dataclass(frozen=True, slots=True)
class Healthy:
    """The attempt ran `retry.reset_after` and checkpointed (or was caught up)."""

    attempt_task: AttemptTask


AttemptTaskMessage = Ended | Opened | Healthy


@dataclass(eq=False, kw_only=True)
class AttemptTask:
    """One backoff + start slot + attempt sequence, run by one task.

    It is also the attempt's `AttemptListener`: the attempt calls `opened` and
    `healthy` from its own task, so an attempt task is a single task with no watchers.
    """

    number: int
    job: JobConfig
    ledger: JobLedger
    components: Components
    slots: StartSlots
    post: Callable[[AttemptTaskMessage], None]
    retry_at: float | None = None
    """Event-loop time the backoff wait ends, while it is waiting."""
    counters: JobCounters = field(default_factory=JobCounters)
    """The job's counters, which the attempt adds to."""
    restart: bool = False
    """Started again after a failed attempt (counted as a restart once it runs)."""
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    attempt: Attempt | None = None
    """Set once a start slot is held and the attempt begins: from then on it counts."""
    superseded: bool = False
    """An operator or the shutdown ended it: nothing it reports counts any more."""
    _retry_now: anyio.Event | None = field(default=None, init=False)
    _holds_slot: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.retry_at is not None:  # only an attempt task with a backoff can be told to skip it
            self._retry_now = anyio.Event()

    def retry_now(self) -> None:
        """End the backoff wait now (`supervisor retry`)."""
        if self._retry_now is not None:
            self._retry_now.set()

    async def run(self) -> None:
        end: AttemptEnd | None = None
        error: BaseException | None = None
        with self.scope:
            if self._retry_now is not None and self.retry_at is not None:
                with anyio.move_on_after(self.retry_at - anyio.current_time()):
                    await self._retry_now.wait()
                self.retry_at = None
            try:
                end = await self._run_attempt()
            except BaseException as exc:  # plugin code: classified by the owner
                if _cancelled():
                    # A real cancellation: it stands, whatever plugin code made of it.
                    if isinstance(exc, anyio.get_cancelled_exc_class()):
                        raise
                    await anyio.lowlevel.checkpoint()  # raises the cancellation itself
                # Not cancelled: a CancelledError here is one plugin code raised.
                error = exc
        # Posted after the attempt fully ended (closed), or after a cancellation.
        self.post(Ended(self, end, error))

    async def _run_attempt(self) -> AttemptEnd:
        # A start slot is held from before the attempt starts until its source opened.
        await self.slots.take()
        self._holds_slot = True
        try:
            self.attempt = Attempt(
                self.job, self.ledger, self.number, self.components, self, self.counters
            )
            self.counters.attempts += 1
            self.counters.restarts += self.restart
            return await self.attempt.run()
        finally:
            self._give_back_slot()

    def _give_back_slot(self) -> None:
        if self._holds_slot:
            self._holds_slot = False
            self.slots.give_back()

    # --- AttemptListener: called from inside `attempt.run` ------------------------------

    def opened(self) -> None:
        self._give_back_slot()  # the start is over: let the next job start
        self.post(Opened(self))

    def healthy(self) -> None:
        self.post(Healthy(self))


def _cancelled() -> bool:
    """Whether a cancel scope around the current task (not shielded off) was cancelled."""
    return anyio.current_effective_deadline() == -math.inf
