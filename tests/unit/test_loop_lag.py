"""The event-loop lag probe the daemon runs at log level debug, or when switched on."""

from __future__ import annotations

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.loop_lag import lag_summary, probe_wanted, report_loop_lag
from tests.conftest import virtual_time_backend


@pytest.fixture
def anyio_backend() -> object:
    return virtual_time_backend()


def test_summary_gives_nearest_rank_percentiles_of_the_lags() -> None:
    """p50, p99 and max are taken from the lags as given, by nearest rank."""
    summary = lag_summary([float(n) for n in range(1, 101)])
    assert (summary["p50_ms"], summary["p99_ms"], summary["max_ms"]) == (50.0, 99.0, 100.0)


@pytest.mark.anyio
async def test_the_probe_reports_once_a_second_with_every_lag_it_saw() -> None:
    """Each daemon.loop_lag event holds one lag per 50 ms probe of the second before it."""
    with capture_logs() as logs:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(report_loop_lag)
            await anyio.sleep(2.5)
            tasks.cancel_scope.cancel()
    events = [log for log in logs if log["event"] == "daemon.loop_lag"]
    assert len(events) == 2
    assert all(len(event["lags_ms"]) == 20 and event["max_ms"] >= 0 for event in events)


def test_the_probe_runs_at_debug_or_when_switched_on_and_not_otherwise() -> None:
    """SUPERVISOR_LOOP_LAG=1 turns the probe on at any level; without it only debug does."""
    assert probe_wanted("debug", {})
    assert probe_wanted("info", {"SUPERVISOR_LOOP_LAG": "1"})
    assert not probe_wanted("info", {})
    assert not probe_wanted("warning", {"SUPERVISOR_LOOP_LAG": "0"})
