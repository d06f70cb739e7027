"""RabbitMQ soak: the broker restarted, then the daemon SIGKILLed, mid-stream. Nothing is
lost, repeats stay within one checkpoint per interruption, the job ends RUNNING.

CI size by default; ``SOAK_FULL=1`` runs the issue's size: 100,000 messages, the broker
restarted 10 times, the daemon SIGKILLed 20 times.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import amqp_broker as broker
from tests.daemon_process import DaemonProcess, write_config
from tests.servers import RabbitServer

pytestmark = pytest.mark.slow

FULL = bool(os.environ.get("SOAK_FULL"))
COUNT = 100_000 if FULL else 20_000
BROKER_RESTARTS = 10 if FULL else 3
DAEMON_KILLS = 20 if FULL else 5
EVERY_RECORDS = 1000


def _state(config: Path, job: str) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "supervisor", "status", "--json", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return str(next(j["state"] for j in json.loads(shown.stdout) if j["job"] == job))


def _prepare(server: RabbitServer, tmp_path: Path, queue: str, *, quorum: bool = False) -> Path:
    broker.run(broker.declare(server.url, queue, quorum=quorum))
    broker.run(broker.publish(server.url, queue, broker.numbered(COUNT)))
    job = broker.job(server.url, queue, every_records=EVERY_RECORDS, extra="") + broker.THROTTLED
    return write_config(tmp_path, {"soak": job})


def _check(out: Path, interruptions: int, checkpoints_each: int = 1) -> None:
    seqs = broker.seqs(out)
    assert sorted(set(seqs)) == list(range(COUNT)), "records lost"
    repeated = broker.repeats(seqs)
    print(f"{COUNT} records, {interruptions} interruptions, {repeated} repeats")
    assert repeated <= interruptions * checkpoints_each * EVERY_RECORDS


@pytest.mark.parametrize(
    ("queue_type", "kill"),
    [("classic", False), ("quorum", True)],
    ids=["classic-queue-clean-restarts", "quorum-queue-sigkills"],
)
def test_broker_restarted_mid_stream(
    rabbit_server: RabbitServer, tmp_path: Path, queue_type: str, kill: bool
) -> None:
    """Each restart fails the attempt (RETRYING); the job comes back by itself and goes on.

    A SIGKILLed broker may forget acks it received just before (RabbitMQ writes them to
    disk lazily): on a classic queue that repeats many checkpoints, the broker's doing,
    so classic queues are restarted cleanly (one checkpoint per restart at most). A
    quorum queue, whose Raft log holds the acks, is SIGKILLed: at most two checkpoints
    per kill (the one in flight, and one whose ack the broker had taken but not yet
    written; or, the kill unnoticed for a moment, one more read from what had already
    been delivered)."""
    config = _prepare(
        rabbit_server, tmp_path, f"soak-broker-{queue_type}", quorum=queue_type == "quorum"
    )
    out = tmp_path / "out.jsonl"
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        for restart in range(BROKER_RESTARTS):
            broker.wait_until_written(
                daemon, out, COUNT * (restart + 1) // (BROKER_RESTARTS + 1), timeout=300
            )
            rabbit_server.restart(kill=kill)
        broker.wait_until_written(daemon, out, COUNT, timeout=300)
        daemon.wait_logged("job.state_changed", to="retrying")
        broker.wait_state(daemon, "soak", "running")
        assert _state(config, "soak") == "running"
    finally:
        daemon.stop()
    _check(out, BROKER_RESTARTS, checkpoints_each=2 if kill else 1)


def test_daemon_sigkilled_mid_stream(rabbit_server: RabbitServer, tmp_path: Path) -> None:
    """A SIGKILLed daemon's unacknowledged messages return to the queue; the next one
    reads them again: at most one checkpoint's worth each time."""
    config = _prepare(rabbit_server, tmp_path, "soak-kill")
    out = tmp_path / "out.jsonl"
    moments = random.Random(20)
    for kill in range(DAEMON_KILLS):
        daemon = DaemonProcess(config)
        daemon.keep_draining()
        broker.wait_until_written(
            daemon, out, COUNT * (kill + 1) // (DAEMON_KILLS + 1), timeout=300
        )
        # The file grows at a checkpoint's flush: a kill at a random moment after it
        # lands anywhere in the checkpoint cycle (before or after the snapshot and ack).
        time.sleep(moments.uniform(0, 0.15))
        daemon.process.kill()
        daemon.stop()
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        broker.wait_until_written(daemon, out, COUNT, timeout=300)
        broker.wait_state(daemon, "soak", "running")
        assert _state(config, "soak") == "running"
    finally:
        daemon.stop()
    _check(out, DAEMON_KILLS)
