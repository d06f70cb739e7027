"""Per-job process counters: plain ints the hot path increments, read at scrape time.

A job's `JobCounters` belongs to its owner and outlives its attempts; it is not
persisted (these are process counters: a daemon restart begins them at zero). The
attempt adds to it once per batch and once per checkpoint, never per record, and
nothing in it allocates: fixed attributes and fixed-length lists only, so a scrape
reading it from a worker thread never sees a container change size.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Final

STAGES: Final = ("source", "processor", "sink", "checkpoint")
"""Where an error was raised (`errors_total`'s `stage` label), in index order."""
SOURCE, PROCESSOR, SINK, CHECKPOINT = range(4)

DROP_REASONS: Final = ("filtered", "skipped", "dead_lettered")
"""Why a record read was not written (`records_dropped_total`'s `reason`), in index order:
the processor returned None; the `[records]` policy skipped it; or dead-lettered it."""
FILTERED, SKIPPED, DEAD_LETTERED = range(3)

DURATION_BUCKETS: Final = (0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10.0)
"""Upper bounds (seconds) of the checkpoint and flush duration histograms (+Inf implied)."""


class DurationHistogram:
    """Counts of observations per bucket (not cumulative), their sum and count."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.sum += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs as Prometheus shows them, +Inf last."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, count in zip((*DURATION_BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


class JobCounters:
    """Everything counted about one job since this daemon started."""

    __slots__ = (
        "attempts",
        "bytes_read",
        "bytes_written",
        "checkpoint_seconds",
        "checkpoints_failed",
        "checkpoints_ok",
        "dropped",
        "errors",
        "flush_seconds",
        "last_checkpoint_at",
        "records_read",
        "records_written",
        "restarts",
        "source_lag",
    )

    def __init__(self, last_checkpoint_at: float | None = None) -> None:
        self.records_read = 0
        self.records_written = 0
        self.bytes_read = 0
        """Bytes of attempts that ended; the live attempt's are added when shown."""
        self.bytes_written = 0
        self.dropped = [0] * len(DROP_REASONS)
        self.errors = [0] * len(STAGES)
        self.attempts = 0
        """Attempts started."""
        self.restarts = 0
        """Attempts started again after a failed one (retries)."""
        self.checkpoints_ok = 0
        self.checkpoints_failed = 0
        self.checkpoint_seconds = DurationHistogram()
        """Whole checkpoints: sink flush, durable snapshot, source commit."""
        self.flush_seconds = DurationHistogram()
        self.last_checkpoint_at = last_checkpoint_at
        """Wall-clock time of the last durable checkpoint (at first: the snapshot's)."""
        self.source_lag: int | None = None
        """The source's own `lag` (entries, or a file's bytes behind its end), as sampled
        periodically (`supervisor.observe.sampler`), never on scrape."""


class RateHistory:
    """Records/s of one job, one sample per sampling interval, for the last `size` samples."""

    __slots__ = ("_next", "_rates", "_seen", "last_count")

    def __init__(self, size: int, last_count: int) -> None:
        self._rates = array("f", bytes(4 * size))
        self._next = 0
        self._seen = 0
        self.last_count = last_count

    def add(self, rate: float) -> None:
        self._rates[self._next] = rate
        self._next = (self._next + 1) % len(self._rates)
        self._seen = min(self._seen + 1, len(self._rates))

    def rates(self) -> list[float]:
        """Oldest first; only the samples taken (fewer than `size` at first)."""
        size = len(self._rates)
        ordered = self._rates[self._next :] + self._rates[: self._next]
        return list(ordered[size - self._seen :])
