"""The ``postgres`` table source under kills, while 8 writers commit out of order: the
server SIGKILLed and restarted 10 times during a stream, and the daemon SIGKILLed
during another (8 times; 20 with SOAK_FULL=1). Two jobs read the table: into the
``postgres`` sink (every row exactly once) and into a ``jsonl`` file (every row, repeats
within one checkpoint per kill).

Short by default (CI); the issue's full size (100,000 rows) with ``SOAK_FULL=1``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.integration.test_postgres_table_source import (
    SOURCE_TABLE,
    Writers,
    copied_counts,
    jsonl_counts,
    table_jobs,
    wait_copied,
)
from tests.servers import PostgresServer

pytestmark = pytest.mark.slow

FULL = bool(os.environ.get("SOAK_FULL"))


def test_server_killed_ten_times_during_a_stream_loses_nothing(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    count, rate, every = (100_000, 8_000, 1000) if FULL else (16_000, 3_000, 300)
    postgres_server.execute(SOURCE_TABLE)
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path, table_jobs(postgres_server.url, out, every=every))
    writers = Writers(postgres_server.url, count, rate=rate).start()
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        for _ in range(10):
            mark = len(daemon.events)
            daemon.wait_logged("job.checkpoint", since=mark, job="tojsonl")  # back and moving
            daemon.wait_logged("job.checkpoint", since=mark, job="topg")
            postgres_server.kill()
            daemon.wait_logged("job.attempt_failed", since=mark, job="tojsonl")
            daemon.wait_logged("job.attempt_failed", since=mark, job="topg")
            postgres_server.start()
        assert not writers.done(), "the writers ended before the tenth kill"
        writers.join()
        wait_copied(postgres_server, out, count, timeout=300)
    finally:
        daemon.stop()
    retried = [e for e in daemon.events if e.get("event") == "job.attempt_failed"]
    assert all("unavailable" in str(e.get("error")) for e in retried), retried[:3]
    assert copied_counts(postgres_server) == (count, count)
    counts = jsonl_counts(out)
    assert sorted(counts) == list(range(count))
    kills = len([e for e in retried if e.get("job") == "tojsonl"])
    assert sum(counts.values()) - count <= kills * every


def test_daemon_killed_during_a_stream_loses_nothing(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    # Slow enough to outlast 20 daemon starts (each ~1 s on a loaded machine).
    kills, count, rate, every = (20, 100_000, 2_500, 1000) if FULL else (8, 5_000, 500, 300)
    postgres_server.execute(SOURCE_TABLE)
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path, table_jobs(postgres_server.url, out, every=every))
    writers = Writers(postgres_server.url, count, rate=rate).start()
    rng = random.Random(20)
    for kill in range(kills):
        daemon = DaemonProcess(config)
        daemon.keep_draining()
        if kill % 4 == 0:
            # Early: before the first checkpoint of this run, or right at it.
            daemon.wait_logged("job.state_changed", job="tojsonl", to="running")
        else:
            daemon.wait_logged("job.checkpoint", job="tojsonl")
        # A random moment after: mid-batch, mid-flush, between commit and snapshot.
        time.sleep(rng.uniform(0, every / rate))
        daemon.process.kill()
        daemon.stop()
    assert not writers.done(), "the writers ended before the last kill"
    final = DaemonProcess(config)
    final.keep_draining()
    try:
        writers.join()
        wait_copied(postgres_server, out, count, timeout=300)
    finally:
        final.stop()
    assert copied_counts(postgres_server) == (count, count)  # exactly once
    counts = jsonl_counts(out)
    assert sorted(counts) == list(range(count))
    assert sum(counts.values()) - count <= kills * every  # within one checkpoint per kill
