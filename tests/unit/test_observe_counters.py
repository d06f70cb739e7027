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


async def test_file_source_reports_bytes_behind_the_end_and_bytes_read(tmp_path: Path) -> None:
    """The file source's lag is the bytes not yet delivered; its bytes read count up."""
    from supervisor.connectors.file import FileSourceConfig
    from supervisor.connectors.file.source import FileSource

    path = tmp_path / "in.txt"
    path.write_text("".join(f"line {index:04d}\n" for index in range(100)))  # 10 bytes each
    source = FileSource(FileSourceConfig(path=path, follow=True), chunk_bytes=100)
    await source.open(None)
    try:
        batch = await source.read(5, 1.0)
        assert len(batch.records) == 5
        assert source.progress() == {"lag": 1000 - 50}
        assert source.bytes_read == 100  # one chunk
        while (await source.read(1000, 0.0)).records:
            pass
        assert source.bytes_read == 1000
        assert source.progress() == {"lag": 0}
    finally:
        await source.close()


class _Attempt:
    def __init__(self, progress: dict[str, object] | None) -> None:
        self.progress = progress

    def source_progress(self) -> dict[str, object] | None:
        return self.progress


class _Owner:
    def __init__(self, name: str, progress: dict[str, object] | None, running: bool) -> None:
        self.name = name
        self.counters = JobCounters()
        self.attempt = _Attempt(progress) if running else None


async def test_sampler_keeps_rates_and_the_sources_lag() -> None:
    """Each sample adds a job's records/s since the last one and stores its source's int
    `lag`; no lag without an attempt or an int; a job gone is forgotten."""
    from supervisor.observe.sampler import Sampler

    owners = {
        "file": _Owner("file", {"lag": 4096}, running=True),
        "odd": _Owner("odd", {"lag": "a lot"}, running=True),
        "paused": _Owner("paused", None, running=False),
    }
    sampler = Sampler(lambda: owners, 15.0)  # type: ignore[arg-type,return-value]
    assert sampler.size == 60  # 15 minutes
    await sampler.sample()
    owners["file"].counters.records_read = 300
    sampler._sampled_at = (sampler._sampled_at or 0) - 10  # as if 10 s went by, plus a bit
    await sampler.sample()
    rates = sampler.history["file"].rates()
    assert len(rates) == 1 and 29 < rates[0] <= 30
    assert owners["file"].counters.source_lag == 4096
    assert owners["odd"].counters.source_lag is None
    assert owners["paused"].counters.source_lag is None
    del owners["odd"]
    await sampler.sample()
    assert set(sampler.history) == {"file", "paused"}
