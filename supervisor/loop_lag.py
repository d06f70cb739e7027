"""How late the event loop wakes a sleeping task: the daemon's responsiveness, as a log event.

With ``log_level = "debug"``, or with ``SUPERVISOR_LOOP_LAG=1`` in its
environment at any level, the daemon runs `report_loop_lag`: a task that
sleeps `PROBE_INTERVAL` again and again and notes how much later than asked
it woke (the time other work held the loop). Once a second it logs
``daemon.loop_lag`` (at info) with the lags seen (``lags_ms``) and their
``p50_ms``, ``p99_ms`` and ``max_ms``. Otherwise it does not run and costs
nothing. The variable lets a benchmark measure the daemon as it runs in
production, at ``info``, without the debug events' own cost.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import anyio
import structlog

log = structlog.get_logger("supervisor.loop_lag")

PROBE_INTERVAL = 0.05
"""Seconds the probe asks to sleep."""

REPORT_INTERVAL = 1.0
"""Seconds between two ``daemon.loop_lag`` events."""

ENVIRONMENT_SWITCH = "SUPERVISOR_LOOP_LAG"
"""Set to ``1`` to run the probe whatever the log level."""


def probe_wanted(log_level: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the daemon should run the probe: at debug, or when switched on."""
    return log_level == "debug" or environ.get(ENVIRONMENT_SWITCH) == "1"


async def report_loop_lag(
    probe_interval: float = PROBE_INTERVAL, report_interval: float = REPORT_INTERVAL
) -> None:
    """Probe the loop forever, logging what was seen every `report_interval`."""
    lags: list[float] = []
    report_at = anyio.current_time() + report_interval
    while True:
        asked_at = anyio.current_time()
        await anyio.sleep(probe_interval)
        now = anyio.current_time()
        lags.append(max(now - asked_at - probe_interval, 0.0) * 1000)
        if now >= report_at:
            log.info("daemon.loop_lag", **lag_summary(lags))
            lags = []
            report_at = now + report_interval


def lag_summary(lags_ms: list[float]) -> dict[str, object]:
    """The lags (milliseconds) and their nearest-rank p50, p99 and maximum."""
    ordered = sorted(lags_ms)
    return {
        "lags_ms": [round(lag, 3) for lag in lags_ms],
        "p50_ms": round(_rank(ordered, 0.50), 3),
        "p99_ms": round(_rank(ordered, 0.99), 3),
        "max_ms": round(ordered[-1], 3),
    }


def _rank(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * fraction) - 1))]
