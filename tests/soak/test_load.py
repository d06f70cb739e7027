"""Load: 1,000 jobs in one real daemon under a failure storm (`bench/storm.py`), while a
client polls `status` throughout. Timings are figures for the bench, not assertions here."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from bench.storm import read_events, run_storm

pytestmark = pytest.mark.slow

JOBS = 1000


def test_a_thousand_jobs_recover_from_a_storm_while_status_is_answered_without_overlap(
    tmp_path: Path,
) -> None:
    """Every status request is answered, no job's attempts overlap, and every job recovers."""
    figures = run_storm(JOBS, tmp_path)  # raises if any phase never completes
    print(figures)

    assert figures["status_requests"] > 0
    assert figures["status_errors"] == 0
    assert figures["exit_code"] == 0
    events = read_events(tmp_path / "daemon.log")
    # The daemon runs one thread of jobs, so the log's order is the order things happened:
    # each job's sources alternate opened (1 open) and closed (0 open), never two at once.
    opens: dict[str, list[int]] = defaultdict(list)
    for event in events:
        if event.get("event") in ("testing.source_opened", "testing.source_closed"):
            opens[event["key"]].append(event["open_now"])
    assert [e for e in events if e.get("event") == "testing.source_overlap"] == []
    assert len(opens) == JOBS
    for key, counts in opens.items():
        assert counts[0::2] == [1] * len(counts[0::2]), key
        assert counts[1::2] == [0] * len(counts[1::2]), key
        # Opened before the storm, at least once in it, and again after it.
        assert len(counts[0::2]) >= 3, key
    final = {}
    for event in events:
        if event.get("event") == "job.state_changed":
            final[event["job"]] = event["to"]
    assert set(final) == {f"job{index:04d}" for index in range(JOBS)}
    assert set(final.values()) == {"running"}  # SIGTERM keeps the state: no change logged
