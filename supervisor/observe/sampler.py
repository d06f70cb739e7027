"""What is sampled periodically, never on scrape: each job's records/s and source lag,
and the event loop's lag.

Every `interval` the sampler walks the jobs (a slice at a time, yielding between): it
adds each job's records/s since the last sample to its `RateHistory` (the page's
chart of the last `HISTORY_SECONDS`) and stores its source's ``lag`` (the optional
`progress` hook; a file's bytes behind its end) in the job's counters, where a scrape
reads it. A probe task sleeps `PROBE_INTERVAL` again and again and keeps the largest
lag of the interval: the ``event_loop_lag_seconds`` gauge.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final

import anyio
import anyio.lowlevel

from supervisor.observe.counters import RateHistory

if TYPE_CHECKING:
    from supervisor.job_owner import JobOwner

HISTORY_SECONDS: Final = 15 * 60
"""How far back the page's records/s chart goes."""
PROBE_INTERVAL: Final = 0.5
"""Seconds the event-loop probe asks to sleep."""
SLICE: Final = 500
"""Jobs sampled per turn of the event loop."""


class Sampler:
    """Owns the rate histories and the loop lag; `run` is its task."""

    def __init__(self, owners: Callable[[], Mapping[str, JobOwner]], interval: float) -> None:
        self._owners = owners
        self.interval = interval
        self.size = max(2, math.ceil(HISTORY_SECONDS / interval))
        self.history: dict[str, RateHistory] = {}
        self.loop_lag: float | None = None
        """The largest event-loop lag (seconds) of the last full interval."""
        self._lag_now = 0.0
        self._sampled_at: float | None = None

    async def run(self) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._probe)
            await self.sample()  # a first look at once: the lag is known from the start
            while True:
                await anyio.sleep(self.interval)
                await self.sample()

    async def _probe(self) -> None:
        while True:
            asked_at = anyio.current_time()
            await anyio.sleep(PROBE_INTERVAL)
            lag = max(anyio.current_time() - asked_at - PROBE_INTERVAL, 0.0)
            self._lag_now = max(self._lag_now, lag)

    async def sample(self) -> None:
        """One sample of every job."""
        now = anyio.current_time()
        elapsed = None if self._sampled_at is None else now - self._sampled_at
        self._sampled_at = now
        self.loop_lag, self._lag_now = self._lag_now, 0.0
        owners = list(self._owners().values())
        for start in range(0, len(owners), SLICE):
            if start:
                await anyio.lowlevel.checkpoint()
            for owner in owners[start : start + SLICE]:
                self._sample_job(owner, elapsed)
        if len(self.history) > len(owners):  # jobs a reload removed
            names = {owner.name for owner in owners}
            for name in [name for name in self.history if name not in names]:
                del self.history[name]

    def _sample_job(self, owner: JobOwner, elapsed: float | None) -> None:
        counters = owner.counters
        history = self.history.get(owner.name)
        if history is None:
            history = self.history[owner.name] = RateHistory(self.size, counters.records_read)
        elif elapsed:
            history.add((counters.records_read - history.last_count) / elapsed)
            history.last_count = counters.records_read
        attempt = owner.attempt
        lag = None
        if attempt is not None:
            progress = attempt.source_progress()
            found = None if progress is None else progress.get("lag")
            if type(found) is int:
                lag = found
        counters.source_lag = lag

    def rate(self, job: str) -> float | None:
        """Records/s of `job` over the last interval; None before two samples."""
        history = self.history.get(job)
        rates = history.rates() if history is not None else []
        return rates[-1] if rates else None
