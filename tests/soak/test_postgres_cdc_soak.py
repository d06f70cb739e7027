"""The ``postgres-cdc`` source under kills while a writer inserts, updates and deletes:
the server SIGKILLed and restarted during a stream (5 times; 10 with SOAK_FULL=1), and
the daemon SIGKILLed during another (4 times; 20 with SOAK_FULL=1). Every change
arrives, in commit order, repeats within one checkpoint per kill, and the slot's
confirmed position never passes the job's snapshot.

Short by default (CI); the issue's full size (100,000 transactions, 20 daemon kills)
with ``SOAK_FULL=1``.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.integration.test_postgres_cdc import (
    SCHEMA,
    ChangeWriter,
    cdc_job,
    expected_changes,
    first_occurrences,
    read_changes,
    slot_never_passes_the_snapshot,
    wait_all,
)
from tests.servers import PostgresServer

pytestmark = pytest.mark.slow

FULL = bool(os.environ.get("SOAK_FULL"))


def test_server_killed_during_a_stream_loses_nothing(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    kills, count, rate, every = (10, 100_000, 3_000, 1000) if FULL else (5, 2_000, 400, 200)
    postgres_server.execute(SCHEMA)
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path, {"cdc": cdc_job(postgres_server.url, out, every=every)})
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        daemon.wait_logged("job.state_changed", job="cdc", to="running")  # the slot exists
        writer = ChangeWriter(postgres_server.url, count, rate=rate)
        writer.start()
        for _ in range(kills):
            mark = len(daemon.events)
            daemon.wait_logged("job.checkpoint", since=mark, job="cdc")  # back and moving
            postgres_server.kill()
            daemon.wait_logged("job.attempt_failed", since=mark, job="cdc")
            postgres_server.start()
        assert writer.is_alive(), "the writer ended before the last kill"
        writer.join(600)
        assert writer.error is None, writer.error
        expected = expected_changes(count)
        wait_all(out, len(expected), timeout=300)
        assert slot_never_passes_the_snapshot(postgres_server, config)
    finally:
        daemon.stop()
    retried = [e for e in daemon.events if e.get("event") == "job.attempt_failed"]
    assert all("unavailable" in str(e.get("error")) for e in retried), retried[:3]
    changes = read_changes(out)
    assert first_occurrences(changes) == expected
    assert len(changes) - len(expected) <= len(retried) * every


def test_daemon_killed_during_a_stream_loses_nothing(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    kills, count, rate, every = (20, 100_000, 2_500, 1000) if FULL else (4, 2_000, 400, 200)
    postgres_server.execute(SCHEMA)
    out = tmp_path / "out.jsonl"
    config = write_config(tmp_path, {"cdc": cdc_job(postgres_server.url, out, every=every)})
    rng = random.Random(20)
    writer: ChangeWriter | None = None
    for kill in range(kills):
        daemon = DaemonProcess(config)
        daemon.keep_draining()
        daemon.wait_logged("job.state_changed", job="cdc", to="running")
        if writer is None:
            writer = ChangeWriter(postgres_server.url, count, rate=rate)
            writer.start()
        if kill % 4 != 0:
            daemon.wait_logged("job.checkpoint", job="cdc")
        time.sleep(rng.uniform(0, every / rate))  # mid-batch, mid-snapshot, before commit
        daemon.process.kill()
        daemon.stop()
    assert writer is not None and writer.is_alive(), "the writer ended before the last kill"
    final = DaemonProcess(config)
    final.keep_draining()
    try:
        writer.join(600)
        assert writer.error is None, writer.error
        expected = expected_changes(count)
        wait_all(out, len(expected), timeout=300)
        assert slot_never_passes_the_snapshot(postgres_server, config)
    finally:
        final.stop()
    changes = read_changes(out)
    assert first_occurrences(changes) == expected
    assert len(changes) - len(expected) <= kills * every
