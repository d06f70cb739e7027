"""What an attempt counts: records, checkpoints and their durations, errors by stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.attempt import Attempt, AttemptEnd
from supervisor.errors import TransientError
from supervisor.ledger import JobLedger
from supervisor.observe import counters as counted
from supervisor.observe.counters import DurationHistogram, JobCounters, RateHistory
from supervisor.snapshot_store import SnapshotStore
from supervisor.testing import RecordingSink, ScriptedSource, fixed_components
from tests.helpers import make_job

pytestmark = pytest.mark.anyio


async def _ledger(tmp_path: Path) -> JobLedger:
    store = SnapshotStore(tmp_path / "state")
    await store.prepare()
    return JobLedger(store, "job", None)


async def test_an_attempt_counts_records_and_checkpoints(tmp_path: Path) -> None:
    """250 records with a checkpoint every 100: 250 read and written, 3 checkpoints with
    their durations, a last checkpoint time, no error."""
    counters = JobCounters()
    source, sink = ScriptedSource(count=250, batch=60), RecordingSink()
    attempt = Attempt(
        make_job(), await _ledger(tmp_path), 1, fixed_components(source, sink), None, counters
    )
    assert await attempt.run() is AttemptEnd.FINISHED
    assert (counters.records_read, counters.records_written) == (250, 250)
    assert (counters.checkpoints_ok, counters.checkpoints_failed) == (3, 0)
    assert counters.checkpoint_seconds.count == counters.flush_seconds.count == 3
    assert counters.checkpoint_seconds.sum >= counters.flush_seconds.sum
    assert counters.last_checkpoint_at is not None
    assert counters.errors == [0, 0, 0, 0]


async def test_a_failing_read_counts_a_source_error(tmp_path: Path) -> None:
    """A read that raises ends the attempt and counts one error at the source stage."""
    counters = JobCounters()
    source = ScriptedSource(count=100, batch=10, fail_at={50: TransientError("blip")})
    attempt = Attempt(
        make_job(),
        await _ledger(tmp_path),
        1,
        fixed_components(source, RecordingSink()),
        None,
        counters,
    )
    with pytest.raises(TransientError):
        await attempt.run()
    assert counters.errors[counted.SOURCE] == 1
    assert sum(counters.errors) == 1
    assert counters.records_read == 50


async def test_a_failing_flush_counts_a_sink_error_and_a_failed_checkpoint(
    tmp_path: Path,
) -> None:
    """A flush that raises is a failed checkpoint and a sink error."""
    counters = JobCounters()
    sink = RecordingSink()

    async def failing_flush(offset: object) -> None:
        raise OSError("disk gone")

    sink.flush = failing_flush  # type: ignore[method-assign]
    attempt = Attempt(
        make_job(),
        await _ledger(tmp_path),
        1,
        fixed_components(ScriptedSource(count=150, batch=50), sink),
        None,
        counters,
    )
    with pytest.raises(OSError, match="disk gone"):
        await attempt.run()
    assert counters.checkpoints_failed == 1
    assert counters.errors[counted.SINK] == 1


def test_histogram_is_cumulative_with_inf_last() -> None:
    """Observations land in the first bucket at or above them; +Inf counts them all."""
    histogram = DurationHistogram()
    for seconds in (0.0005, 0.001, 0.2, 30.0):
        histogram.observe(seconds)
    buckets = dict(histogram.cumulative())
    assert buckets["0.001"] == 2
    assert buckets["0.5"] == 3
    assert buckets["10.0"] == 3
    assert buckets["+Inf"] == 4
    assert histogram.count == 4


def test_rate_history_keeps_the_last_samples_oldest_first() -> None:
    """A ring of 3 keeps the last 3 rates, oldest first."""
    history = RateHistory(3, 0)
    assert history.rates() == []
    for rate in (1.0, 2.0, 3.0, 4.0):
        history.add(rate)
    assert history.rates() == [2.0, 3.0, 4.0]
