"""The exposition: the fast writer gives prometheus_client's own bytes, in both formats."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from supervisor.observe.collector import JobsCollector
from supervisor.observe.counters import JobCounters
from supervisor.observe.metrics import JobReading, negotiate, write_exposition
from supervisor.states import JobState
from tests.servers import require_module


@pytest.fixture(autouse=True)
def _prometheus_client() -> None:
    """These tests need the extra: skipped without it, failed under CI."""
    require_module("prometheus_client", "metrics")


def _readings() -> list[JobReading]:
    jobs = []
    for index, state in enumerate(JobState):
        counters = JobCounters(None if index % 3 == 0 else 1.7e9 + index / 7)
        counters.records_read = 10**index * 7
        counters.records_written = counters.records_read - index
        counters.bytes_read = 2**40 + index
        counters.dropped = [index, 0, 2 * index]
        counters.errors = [0, index, 0, 1]
        counters.attempts = index + 1
        counters.restarts = index
        counters.checkpoints_ok = index * 3
        counters.checkpoints_failed = index % 2
        for seconds in (0.0004 * index, 0.07, 12.5)[: index % 4]:
            counters.checkpoint_seconds.observe(seconds)
            counters.flush_seconds.observe(seconds / 3)
        counters.source_lag = None if index % 2 else 12_345_678 * index
        jobs.append(JobReading(f"job-{index}", state.value, index, counters, (index, 5)))
    return jobs


@pytest.mark.parametrize("openmetrics", [False, True])
@pytest.mark.parametrize("loop_lag", [None, 0.00123])
def test_fast_writer_matches_prometheus_client(openmetrics: bool, loop_lag: float | None) -> None:
    """Byte for byte what prometheus_client's encoder writes for the reference collector."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

    jobs = _readings()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(jobs, loop_lag))
    reference = generate_openmetrics(registry) if openmetrics else generate_latest(registry)  # type: ignore[no-untyped-call]
    assert write_exposition(jobs, loop_lag, openmetrics=openmetrics) == reference


def test_no_jobs_is_still_a_valid_exposition() -> None:
    """A daemon with no job shows its own series."""
    body = write_exposition([], None, openmetrics=True)
    assert b"stream_supervisor_jobs 0.0\n" in body
    assert body.endswith(b"# EOF\n")


def test_negotiation_follows_prometheus_client() -> None:
    """OpenMetrics when asked for (as Prometheus does), text otherwise."""
    assert negotiate("")[0] is False
    assert negotiate("text/plain;version=0.0.4")[1].startswith("text/plain; version=0.0.4")
    prometheus = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    assert negotiate(prometheus) == (
        True,
        "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=underscores",
    )


def test_promtool_lints_the_exposition_clean() -> None:
    """`promtool check metrics` finds no problem (names, units, help, types)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: apt-get install prometheus")
    body = write_exposition(_readings(), 0.001, openmetrics=False)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, b"")


def test_writer_keeps_unchanged_jobs_and_redraws_changed_ones() -> None:
    """A writer that kept the last scrape's lines writes what a fresh one writes after
    counters, a state, a lag and a histogram changed, and after a job went away."""
    from supervisor.observe.metrics import ExpositionWriter

    jobs = _readings()
    writer = ExpositionWriter()
    writer.write(jobs, None, openmetrics=False)
    jobs[0].counters.records_read += 1
    jobs[1].counters.checkpoint_seconds.observe(0.2)
    jobs[2].counters.source_lag = 7
    jobs[3] = JobReading(jobs[3].name, "failed", 9, jobs[3].counters, (0, 0))
    del jobs[4]
    for openmetrics in (False, True):
        fresh = write_exposition(jobs, None, openmetrics=openmetrics)
        assert writer.write(jobs, None, openmetrics=openmetrics) == fresh
