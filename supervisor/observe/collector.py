"""The reference for `/metrics`: a `prometheus_client` collector of the same families.

The daemon writes its exposition itself (`supervisor.observe.metrics.ExpositionWriter`,
many times faster); the tests hold that writer byte for byte equal to what
`prometheus_client`'s own encoders write for this collector, in both formats.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from supervisor.observe.counters import DROP_REASONS, STAGES
from supervisor.observe.metrics import (
    BUILD,
    EVENT_LOOP_LAG,
    FAMILIES,
    JOBS,
    PREFIX,
    STATES,
    JobReading,
    build_labels,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric


def _values(job: JobReading) -> Iterator[list[tuple[str | None, float | None]]]:
    """Each family's samples of `job`, in `FAMILIES` order: (label value, value); a
    histogram's are (le, cumulative count) with the sum last as (None, sum)."""
    c = job.counters
    yield [(None, c.records_read)]
    yield [(None, c.records_written)]
    yield [(None, c.bytes_read + job.live_bytes[0])]
    yield [(None, c.bytes_written + job.live_bytes[1])]
    yield list(zip(DROP_REASONS, c.dropped, strict=True))
    yield list(zip(STAGES, c.errors, strict=True))
    yield [(None, c.attempts)]
    yield [(None, c.restarts)]
    yield [("ok", c.checkpoints_ok), ("failed", c.checkpoints_failed)]
    for histogram in (c.checkpoint_seconds, c.flush_seconds):
        yield [*histogram.cumulative(), (None, histogram.sum)]
    yield [] if c.last_checkpoint_at is None else [(None, c.last_checkpoint_at)]
    yield [(state, 1.0 if state == job.state else 0.0) for state in STATES]
    yield [(None, job.failed_attempts)]
    yield [] if c.source_lag is None else [(None, c.source_lag)]


class JobsCollector:
    """The reference: a `prometheus_client` collector of the same families."""

    def __init__(self, jobs: Sequence[JobReading], loop_lag: float | None) -> None:
        self._jobs = jobs
        self._loop_lag = loop_lag

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        kinds = {
            "counter": CounterMetricFamily,
            "gauge": GaugeMetricFamily,
            "histogram": HistogramMetricFamily,
        }
        metrics = [
            kinds[family.kind](
                PREFIX + family.name,
                family.help,
                labels=["job"] if family.label is None else ["job", family.label],
            )
            for family in FAMILIES
        ]
        for job in self._jobs:
            for family, metric, samples in zip(FAMILIES, metrics, _values(job), strict=True):
                if family.kind == "histogram":
                    metric.add_metric([job.name], samples[:-1], samples[-1][1])  # type: ignore[attr-defined,unused-ignore]
                    continue
                for label, value in samples:
                    labels = [job.name] if label is None else [job.name, label]
                    metric.add_metric(labels, value)  # type: ignore[attr-defined,unused-ignore]
        yield from metrics
        loop = GaugeMetricFamily(PREFIX + EVENT_LOOP_LAG.name, EVENT_LOOP_LAG.help)
        if self._loop_lag is not None:
            loop.add_metric([], self._loop_lag)
        yield loop
        jobs = GaugeMetricFamily(PREFIX + JOBS.name, JOBS.help)
        jobs.add_metric([], len(self._jobs))
        yield jobs
        build = InfoMetricFamily(PREFIX + BUILD.name, BUILD.help)
        build.add_metric([], build_labels())
        yield build
