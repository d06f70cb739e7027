"""What each control verb does to the running supervisor, and how a job is shown."""

from __future__ import annotations

import functools
import json
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from supervisor.control.protocol import Request
from supervisor.errors import CommandRefused, ConfigError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator

    from supervisor.daemon import StateChange, Supervisor
    from supervisor.job import JobRunner

JOB_VERBS = {"pause", "resume", "stop", "start", "restart", "retry"}
IDEMPOTENT_VERBS = {"pause", "stop"}
"""Verbs that succeed, changing nothing, on a job already where they would put it."""


async def dispatch(supervisor: Supervisor, request: Request) -> Any:
    """Run one request; raises CommandRefused (or ProtocolError) with the reason."""
    if request.verb == "status":
        return await _status(_select(supervisor, request.jobs), detail=len(request.jobs) == 1)
    if request.verb == "events":
        if request.options.get("follow"):
            return EventFeed(supervisor, request.jobs)
        return [
            event_view(change)
            for change in supervisor.history
            if not request.jobs or change.job in request.jobs
        ]
    if request.verb == "reload":
        try:
            return {"applied": True, **(await supervisor.reload())}
        except ConfigError as exc:
            return {"applied": False, "errors": [str(issue) for issue in exc.issues]}
    if request.verb == "offset":
        if len(request.jobs) != 1:
            raise CommandRefused("offset takes exactly one job")
        (runner,) = _select(supervisor, request.jobs)
        if request.options.get("set"):
            _check_offset(request.value)
            await supervisor.command(runner.name, "set_offset", request.value)
        return {"job": runner.name, "state": runner.state.value, "offset": runner.ledger.offset}
    if not request.jobs:
        raise CommandRefused(f"{request.verb} needs at least one job name")
    runners = _select(supervisor, request.jobs)
    results = []
    for runner in runners:
        before = runner.state
        try:
            state = await supervisor.command(runner.name, request.verb)
        except CommandRefused as exc:
            results.append({"job": runner.name, "ok": False, "error": str(exc)})
        else:
            result = {"job": runner.name, "ok": True, "state": state.value}
            if before is state and request.verb in IDEMPOTENT_VERBS:
                result["note"] = f"already {state.value}"
            results.append(result)
    return results


STATUS_SLICE = 100
"""Jobs shown per turn of the event loop: `status` of 1,000 jobs took 6-40 ms in one go."""


async def _status(runners: list[JobRunner], *, detail: bool) -> list[dict[str, Any]]:
    """Every job's view, yielding to the loop between slices (each job is shown as it is
    when its slice is taken)."""
    views: list[dict[str, Any]] = []
    for start in range(0, len(runners), STATUS_SLICE):
        if start:
            await anyio.lowlevel.checkpoint()
        now = anyio.current_time()  # once a slice: it costs more than the rest of a view
        views.extend(
            job_view(runner, now, detail=detail) for runner in runners[start : start + STATUS_SLICE]
        )
    return views


_INT64 = range(-(2**63), 2**63)
_OFFSET_DEPTH = 32
_OFFSET_FORM = (
    "an offset is a number, a string, true or false, or an array or table of them "
    f"(nested at most {_OFFSET_DEPTH} deep)"
)


def _check_offset(value: Any, depth: int = 0) -> None:
    """Refuse a value the snapshot cannot store (null, NaN, 2**64, ...) before the job sees it."""
    if depth > _OFFSET_DEPTH:
        raise CommandRefused(f"offset not set: nested too deeply; {_OFFSET_FORM}")
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        if not _is_unicode(value):
            raise CommandRefused(f"offset not set: text with a lone surrogate; {_OFFSET_FORM}")
        return
    if isinstance(value, int) and value in _INT64:
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    if isinstance(value, list):
        for item in value:
            _check_offset(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():  # keys of a JSON object are always strings
            _check_offset(key, depth + 1)
            _check_offset(item, depth + 1)
        return
    shown = json.dumps(value)
    raise CommandRefused(f"offset not set: {shown[:40]} is not an offset value; {_OFFSET_FORM}")


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # JSON's "\\ud800" decodes to a lone surrogate
        return False
    return True


class EventFeed:
    """`events --follow`: the kept history, then every new change as it happens."""

    def __init__(self, supervisor: Supervisor, jobs: tuple[str, ...]) -> None:
        self._supervisor = supervisor
        self._jobs = jobs

    async def items(self) -> AsyncGenerator[dict[str, Any], None]:
        with self._supervisor.follow() as changes:
            for change in list(self._supervisor.history):
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


def _select(supervisor: Supervisor, names: tuple[str, ...]) -> list[JobRunner]:
    unknown = [name for name in names if name not in supervisor.runners]
    if unknown:
        known = ", ".join(sorted(supervisor.runners)) or "none"
        raise CommandRefused(f"no job named {', '.join(unknown)} (jobs: {known})")
    if not names:
        return [supervisor.runners[name] for name in sorted(supervisor.runners)]
    return [supervisor.runners[name] for name in names]


def job_view(runner: JobRunner, now: float, *, detail: bool = False) -> dict[str, Any]:
    """One job as `supervisor status` shows it at event-loop time `now`."""
    attempt = runner.attempt
    rate = None
    if attempt is not None and attempt.opened_at is not None:
        elapsed = now - attempt.opened_at
        rate = round(attempt.records_read / elapsed, 1) if elapsed > 0 else 0.0
    retry_at = runner.next_retry_at
    view: dict[str, Any] = {
        "job": runner.name,
        "state": runner.state.value,
        "since": _iso(runner.since),
        "offset": runner.ledger.offset,
        "records_per_s": rate,
        "attempt": runner.attempts,
        "next_retry_in": None if retry_at is None else round(max(retry_at - now, 0), 1),
        "error": runner.error,
        "cause": runner.cause,
        "persist_pending": runner.persist_pending,
    }
    if detail:
        snapshot = runner.ledger.snapshot
        failure = runner.failure
        view["snapshot"] = {
            "path": str(runner.snapshot_path),
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
