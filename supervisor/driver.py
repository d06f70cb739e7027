"""A driver: one backoff wait, one start slot, one attempt, and what it reports.

A job's owner (`supervisor.job.JobRunner`) starts a driver only when none is
alive, and forgets it only when the driver's `Ended` message arrives, which
is posted after the attempt's source and sink have closed. That is what makes
"one attempt per job at a time" structural rather than a matter of care.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.components import Components
from supervisor.config.model import JobConfig
from supervisor.ledger import JobLedger


@dataclass(frozen=True, slots=True)
class Ended:
    """The driver is done: the attempt ended (`end`), failed (`error`), or never ran."""

    driver: Driver
    end: AttemptEnd | None
    error: Exception | None


@dataclass(frozen=True, slots=True)
class Opened:
    """The attempt's source opened: it really runs now."""

    driver: Driver


@dataclass(frozen=True, slots=True)
class Healthy:
    """The attempt ran `retry.reset_after` and checkpointed (or was caught up)."""

    driver: Driver


DriverMessage = Ended | Opened | Healthy


@dataclass(eq=False, kw_only=True)
class Driver:
    """One backoff + start slot + attempt sequence, run by one child task."""

    number: int
    job: JobConfig
    ledger: JobLedger
    components: Components
    slots: anyio.CapacityLimiter
    post: Callable[[DriverMessage], None]
    retry_at: float | None = None
    """Event-loop time the backoff wait ends, while it is waiting."""
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    retry_now: anyio.Event = field(default_factory=anyio.Event)
    attempt: Attempt | None = None
    """Set once a start slot is held and the attempt begins: from then on it counts."""
    superseded: bool = False
    """An operator or the shutdown ended it: nothing it reports counts any more."""

    async def run(self) -> None:
        end: AttemptEnd | None = None
        error: Exception | None = None
        with self.scope:
            if self.retry_at is not None:
                with anyio.move_on_after(self.retry_at - anyio.current_time()):
                    await self.retry_now.wait()
                self.retry_at = None
            try:
                end = await self._run_attempt()
            except Exception as exc:  # noqa: BLE001 - classified by the owner
                error = exc
        # Posted after the attempt fully ended (closed), or after a cancellation.
        self.post(Ended(self, end, error))

    async def _run_attempt(self) -> AttemptEnd:
        slot = _StartSlot(self.slots)
        await slot.acquire()
        attempt = self.attempt = Attempt(self.job, self.ledger, self.number, self.components)
        error: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._report_open, attempt, slot)
                tg.start_soon(self._report_health, attempt)
                try:
                    end = await attempt.run()
                except Exception as exc:  # noqa: BLE001 - re-raised below, unwrapped
                    # Raised outside the task group, so it is not wrapped in an
                    # ExceptionGroup that would hide its type from classification.
                    error = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            slot.release()
        if error is not None:
            raise error
        return end

    async def _report_open(self, attempt: Attempt, slot: _StartSlot) -> None:
        await attempt.opened_event.wait()
        slot.release()
        self.post(Opened(self))

    async def _report_health(self, attempt: Attempt) -> None:
        await attempt.opened_event.wait()
        await anyio.sleep(self.job.retry.reset_after)
        await attempt.checkpoint_event.wait()
        self.post(Healthy(self))


class _StartSlot:
    """One of `max_starts_in_flight`: held from before an attempt starts until its source opened."""

    def __init__(self, slots: anyio.CapacityLimiter) -> None:
        self._slots = slots
        self._held = False

    async def acquire(self) -> None:
        await self._slots.acquire_on_behalf_of(self)
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release_on_behalf_of(self)
