"""The ``postgres`` sink under kills: the server SIGKILLed and restarted 10 times during a
stream, and the daemon SIGKILLed 20 times during another; in both the table ends with
every row exactly once (the offset commits with the rows, and wins on restart).

Short by default (CI); the issue's full size (100,000 rows) with ``SOAK_FULL=1``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.integration.test_postgres_delivery import postgres_job, seq_counts
from tests.servers import PostgresServer

pytestmark = pytest.mark.slow

FULL = bool(os.environ.get("SOAK_FULL"))


def test_server_killed_ten_times_during_a_stream_every_row_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    count, rate = (100_000, 10_000) if FULL else (20_000, 4_000)
    postgres_server.execute("CREATE TABLE seqs (seq bigint)")  # no key: repeats would show
    config = write_config(
        tmp_path, {"pg": postgres_job(postgres_server.url, count=count, rate=rate)}
    )
    daemon = DaemonProcess(config, "--exit-when-idle")
    daemon.keep_draining()
    try:
        for _ in range(10):
            mark = len(daemon.events)
            daemon.wait_logged("job.checkpoint", since=mark)  # back, and making progress
            postgres_server.kill()
            daemon.wait_logged("job.attempt_failed", since=mark)
            postgres_server.start()
        rows_at_last_kill = seq_counts(postgres_server)[0]
        assert daemon.process.wait(timeout=300) == 0
    finally:
        daemon.stop()
    assert rows_at_last_kill < count, "the stream ended before the tenth kill"
    retried = [e for e in daemon.events if e.get("event") == "job.attempt_failed"]
    assert len(retried) >= 10
    assert all("unavailable" in str(e.get("error")) for e in retried), retried[:3]
    assert seq_counts(postgres_server) == (count, count, count - 1, 0)


def test_daemon_killed_twenty_times_during_a_stream_every_row_once(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    count, rate, every = (100_000, 20_000, 1000) if FULL else (30_000, 6_000, 300)
    postgres_server.execute("CREATE TABLE seqs (seq bigint)")
    job = postgres_job(postgres_server.url, count=count, rate=rate).replace(
        "every_records = 500", f"every_records = {every}"
    )
    config = write_config(tmp_path, {"pg": job})
    rng = random.Random(20)
    for kill in range(20):
        daemon = DaemonProcess(config, "--exit-when-idle")
        daemon.keep_draining()
        if kill % 4 == 0:
            # Early: before the first checkpoint of this run, or right at it.
            daemon.wait_logged("job.state_changed", job="pg", to="running")
        else:
            daemon.wait_logged("job.checkpoint")
        # A random moment after: mid-batch, mid-flush, between commit and snapshot.
        time.sleep(rng.uniform(0, every / rate))
        assert daemon.process.poll() is None, "the stream ended before the twentieth kill"
        daemon.process.kill()
        daemon.stop()
    assert seq_counts(postgres_server)[0] < count
    final = DaemonProcess(config, "--exit-when-idle")
    assert final.finish(timeout=300) == 0
    assert seq_counts(postgres_server) == (count, count, count - 1, 0)
