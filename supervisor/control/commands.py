"""What each control request does to the running daemon, and how a job is shown.

The handlers need little of the daemon, and say so in `Daemon`: its job owners, its
history of state changes, and a reload. They never import the daemon (it imports them).
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, assert_never

import anyio
import anyio.lowlevel
import anyio.to_thread

from supervisor.components import check_source_offset
from supervisor.control.protocol import (
    Events,
    JobCommand,
    JobVerb,
    Reload,
    Request,
    SetOffset,
    ShowOffset,
    Status,
)
from supervisor.errors import CommandRefused, ConfigError, FinalCheckpointFailed
from supervisor.history import EventHistory, StateChange
from supervisor.offsets import MAX_OFFSET_BYTES, check_offset
from supervisor.states import JobState

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from supervisor.job_owner import JobOwner


class Daemon(Protocol):
    """What the control handlers need of the running daemon."""

    @property
    def owners(self) -> Mapping[str, JobOwner]:
        """The owner of each job, by name."""
        ...

    @property
    def history(self) -> EventHistory: ...

    def owner(self, job: str) -> JobOwner:
        """The owner of `job` now; CommandRefused if there is no such job."""
        ...

    async def reload(self) -> dict[str, Any]:
        """Apply the files as they are now; ConfigError (nothing changed) if they are invalid,
        CommandRefused if the daemon is stopping."""
        ...


async def dispatch(daemon: Daemon, request: Request) -> Any:
    """Run one request; raises CommandRefused with the reason."""
    match request:
        case Status(jobs):
            return Listing(_select(daemon, jobs), detail=len(jobs) == 1)
        case Events(jobs, follow):
            _check_event_jobs(daemon, jobs)
            if follow:
                return EventFeed(daemon.history, jobs)
            wanted = frozenset(jobs)
            return [
                event_view(change)
                for change in daemon.history
                if not wanted or change.job in wanted
            ]
        case Reload():
            try:
                return {"applied": True, **(await daemon.reload())}
            except ConfigError as exc:
                return {"applied": False, "errors": [str(issue) for issue in exc.issues]}
        case ShowOffset(job):
            (owner,) = _select(daemon, (job,))
            return _offset_view(owner)
        case SetOffset(job, value):
            (owner,) = _select(daemon, (job,))
            _check_new_offset(value)
            await _check_source_takes(owner, value)
            await daemon.owner(owner.name).set_offset(value)
            return _offset_view(owner)
        case JobCommand(kind, jobs):
            results = []
            for owner in _select(daemon, jobs):
                before = owner.state
                try:
                    # Looked up again: a reload during an earlier job's command may have
                    # replaced (or removed) this one.
                    state = await run_job_command(daemon.owner(owner.name), kind)
                except (CommandRefused, FinalCheckpointFailed) as exc:
                    results.append({"job": owner.name, "ok": False, "error": str(exc)})
                else:
                    result = {"job": owner.name, "ok": True, "state": state.value}
                    if before is state and kind.idempotent:
                        result["note"] = f"already {state.value}"
                    results.append(result)
            return results
        case _:
            assert_never(request)


async def run_job_command(owner: JobOwner, kind: JobVerb) -> JobState:
    """Run job command `kind` on `owner`; its state once the command's effect is complete."""
    match kind:
        case JobVerb.PAUSE:
            return await owner.pause()
        case JobVerb.RESUME:
            return await owner.resume()
        case JobVerb.STOP:
            return await owner.stop()
        case JobVerb.START:
            return await owner.start()
        case JobVerb.RESTART:
            return await owner.restart()
        case JobVerb.RETRY:
            return await owner.retry()
        case _:
            assert_never(kind)


def _offset_view(owner: JobOwner) -> dict[str, Any]:
    return {"job": owner.name, "state": owner.state.value, "offset": owner.ledger.offset}


STATUS_SLICE = 100
"""Jobs shown per turn of the event loop: `status` of thousands of jobs made in one go
would stall every job for as long as it takes."""


class Listing:
    """`status`: the jobs' views, made a slice at a time as the reply is sent.

    The reply for thousands of jobs is megabytes; made whole, it was held (twice: the
    views and their bytes) for as long as a slow reader took to drain it. Slice by
    slice, the control server holds one slice while the socket is full. Each job is
    shown as it is when its slice is taken.
    """

    def __init__(self, owners: list[JobOwner], *, detail: bool) -> None:
        self._owners = owners
        self._detail = detail

    async def slices(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        for start in range(0, len(self._owners), STATUS_SLICE):
            if start:
                await anyio.lowlevel.checkpoint()
            now = anyio.current_time()  # once a slice: it costs more than the rest of a view
            yield [
                job_view(owner, now, detail=self._detail)
                for owner in self._owners[start : start + STATUS_SLICE]
            ]

    async def collect(self) -> list[dict[str, Any]]:
        """Every view in one list (for in-process callers, which need no streaming)."""
        async with contextlib.aclosing(self.slices()) as slices:
            return [view async for views in slices for view in views]


def _check_new_offset(value: Any) -> None:
    """Refuse a value the snapshot cannot store (null, NaN, 2**64, ...), or one too long to
    send with every `status`, before the job sees it."""
    try:
        check_offset(value, max_bytes=MAX_OFFSET_BYTES)
    except ValueError as exc:
        raise CommandRefused(f"offset not set: {exc}") from None


async def _check_source_takes(owner: JobOwner, value: Any) -> None:
    """Refuse an offset the job's source would refuse at its next open (its `check_offset`
    hook, if it has one): stored, it would only fail the job on resume."""
    try:
        # A worker thread: a plugin's class is imported, and its check is its own code.
        await anyio.to_thread.run_sync(check_source_offset, owner.config, value)
    except (ValueError, TypeError) as exc:
        raise CommandRefused(
            f"offset not set: the source of {owner.name} does not take it: {exc}"
        ) from None


def _check_event_jobs(daemon: Daemon, names: tuple[str, ...]) -> None:
    """Refuse names that are no job now and have no kept history (as `status` does)."""
    unknown = set(names) - set(daemon.owners)
    if unknown:
        unknown -= {change.job for change in daemon.history}
    if unknown:
        known = ", ".join(sorted(daemon.owners)) or "none"
        missing = ", ".join(name for name in names if name in unknown)
        raise CommandRefused(f"no job named {missing} (jobs: {known})")


class EventFeed:
    """`events --follow`: the kept history, then every new change as it happens."""

    def __init__(self, history: EventHistory, jobs: tuple[str, ...]) -> None:
        self._history = history
        self._jobs = frozenset(jobs)

    async def items(self) -> AsyncGenerator[dict[str, Any], None]:
        with self._history.follow() as changes:
            for change in list(self._history):
                if not self._jobs or change.job in self._jobs:
                    yield event_view(change)
            async for change in changes:
                if not self._jobs or change.job in self._jobs:
                    yield event_view(change)


def event_view(change: StateChange) -> dict[str, Any]:
    return {
        "job": change.job,
        "from": change.old.value,
        "to": change.new.value,
        "attempt": change.attempt,
        "cause": change.cause,
        "at": _iso(change.at),
    }


def _select(daemon: Daemon, names: tuple[str, ...]) -> list[JobOwner]:
    owners = daemon.owners
    unknown = [name for name in names if name not in owners]
    if unknown:
        known = ", ".join(sorted(owners)) or "none"
        raise CommandRefused(f"no job named {', '.join(unknown)} (jobs: {known})")
    if not names:
        return [owners[name] for name in sorted(owners)]
    return [owners[name] for name in names]


def job_view(owner: JobOwner, now: float, *, detail: bool = False) -> dict[str, Any]:
    """One job as `supervisor status` shows it at event-loop time `now`."""
    attempt = owner.attempt
    rate = None
    if attempt is not None and attempt.opened_at is not None:
        elapsed = now - attempt.opened_at
        rate = round(attempt.records_read / elapsed, 1) if elapsed > 0 else 0.0
    retry_at = owner.next_retry_at
    view: dict[str, Any] = {
        "job": owner.name,
        "state": owner.state.value,
        "since": _iso(owner.since),
        "offset": owner.ledger.offset,
        "records_per_s": rate,
        "attempt": owner.attempts,
        "next_retry_in": None if retry_at is None else round(max(retry_at - now, 0), 1),
        "error": owner.error,
        "cause": owner.cause,
        "persist_pending": owner.persist_pending,
        "final_checkpoint_error": owner.final_checkpoint_error,
        "source": None if attempt is None else attempt.source_progress(),
    }
    if detail:
        snapshot = owner.ledger.snapshot
        failure = owner.failure
        view["snapshot"] = {
            "path": str(owner.snapshot_path),
            "generation": snapshot.generation,
        }
        view["failure"] = None
        if failure is not None:
            view["failure"] = {
                "type": failure.error_type,
                "message": failure.message,
                "attempts": failure.attempts,
                "first_failure_at": failure.first_failure_at.isoformat(),
                "last_failure_at": failure.last_failure_at.isoformat(),
                "traceback": failure.traceback,
            }
    return view


def _iso(epoch: float) -> str:
    """The time to the second, as `datetime.isoformat` shows it, remembered per second.

    `status` of 1,000 jobs formats 1,000 of these; most fall in a few seconds.
    """
    second = math.floor(epoch)
    if epoch - second >= _ROUNDS_UP:  # the microseconds round up into the next second
        return _iso_uncached(epoch)
    return _iso_second(second)


_ROUNDS_UP = 0.9999995


@functools.lru_cache(maxsize=4096)
def _iso_second(second: int) -> str:
    return _iso_uncached(second)


def _iso_uncached(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
