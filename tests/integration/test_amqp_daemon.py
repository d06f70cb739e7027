"""The amqp connector in the real daemon: a clean stop repeats nothing, a broker that is
away leaves the job RETRYING until it returns, refusals fail the job with a clear
message, and no password ever shows."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests import amqp_broker as broker
from tests.daemon_process import DaemonProcess, write_config
from tests.servers import RabbitServer

pytestmark = pytest.mark.slow

COUNT = 20_000


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _states(config: Path) -> dict[str, dict[str, object]]:
    return {job["job"]: job for job in json.loads(_cli(config, "status", "--json").stdout)}


def test_sigterm_then_restart_repeats_nothing(rabbit_server: RabbitServer, tmp_path: Path) -> None:
    """A clean stop checkpoints and acknowledges what it wrote: no repeats, nothing lost;
    status shows the queue, what was consumed and the lag."""
    queue = "sigterm"
    broker.run(broker.declare(rabbit_server.url, queue))
    broker.run(broker.publish(rabbit_server.url, queue, broker.numbered(COUNT)))
    config = write_config(tmp_path, {"orders": broker.job(rabbit_server.url, queue)})
    out = tmp_path / "out.jsonl"

    first = DaemonProcess(config)
    first.wait_for("job.checkpoint", count=3)
    first.process.send_signal(signal.SIGTERM)
    assert first.finish() == 0
    assert 0 < len(broker.seqs(out)) < COUNT

    second = DaemonProcess(config)
    second.keep_draining()
    try:
        broker.wait_until_written(second, out, COUNT)
        second.wait_logged("job.state_changed", to="running")
        job = _states(config)["orders"]
        assert job["state"] == "running"
        source = job["source"]
        assert isinstance(source, dict) and source["queue"] == queue
    finally:
        assert second.stop() == 0
    assert broker.seqs(out) == list(range(COUNT))
    assert broker.run(broker.count(rabbit_server.url, queue)) == 0


def test_refusals_fail_clearly_and_no_password_shows(
    rabbit_server: RabbitServer, tmp_path: Path
) -> None:
    """Wrong password and missing queue: FAILED with our message, no traceback in `status`;
    neither the right password (in the URL) nor the wrong one (in a file) appears in the
    log, status, events or the state directory."""
    wrong = "wrong-secret-pass-77"
    (tmp_path / "pw").write_text(wrong)
    (tmp_path / "pw").chmod(0o600)
    broker.run(broker.declare(rabbit_server.url, "secret-good"))
    broker.run(broker.publish(rabbit_server.url, "secret-good", broker.numbered(100)))
    plain = rabbit_server.url_without_password
    config = write_config(
        tmp_path,
        {
            "good": broker.job(rabbit_server.url, "secret-good"),
            "badpw": broker.job(
                plain, "secret-good", extra='user = "supervisor"\npassword_file = "../pw"'
            ),
            "missing": broker.job(rabbit_server.url, "no-such-queue"),
        },
    )
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        daemon.wait_logged("job.state_changed", job="badpw", to="failed")
        daemon.wait_logged("job.state_changed", job="missing", to="failed")
        broker.wait_until_written(daemon, tmp_path / "out.jsonl", 100)
        jobs = _states(config)
        assert "refused the credentials" in str(jobs["badpw"]["error"])
        assert 'source.queue: no queue "no-such-queue" on amqp://supervisor:***@' in str(
            jobs["missing"]["error"]
        )
        table = _cli(config, "status").stdout
        shown = [
            table,
            json.dumps(jobs),
            _cli(config, "status", "badpw").stdout,
            _cli(config, "events").stdout,
        ]
        assert "Traceback" not in table
    finally:
        daemon.stop()
    shown.append(json.dumps(daemon.events))
    shown += [path.read_text(errors="replace") for path in (tmp_path / "state").rglob("*.toml")]
    for text in shown:
        assert rabbit_server.PASSWORD not in text
        assert wrong not in text


def test_a_broker_away_leaves_the_job_retrying_until_it_returns(
    rabbit_server: RabbitServer, tmp_path: Path
) -> None:
    """Broker down at start: RETRYING with `cannot connect`; back: RUNNING by itself."""
    queue = "away"
    broker.run(broker.declare(rabbit_server.url, queue))
    broker.run(broker.publish(rabbit_server.url, queue, broker.numbered(10)))
    config = write_config(tmp_path, {"away": broker.job(rabbit_server.url, queue)})
    rabbit_server.stop()
    try:
        daemon = DaemonProcess(config)
        daemon.keep_draining()
        retrying = daemon.wait_logged("job.state_changed", to="retrying")
        assert "source.url: cannot connect to amqp://supervisor:***@" in str(retrying["cause"])
    finally:
        rabbit_server.start()
    try:
        daemon.wait_logged("job.state_changed", to="running")
        broker.wait_until_written(daemon, tmp_path / "out.jsonl", 10)
    finally:
        daemon.stop()


def test_check_refuses_a_prefetch_below_every_records(tmp_path: Path) -> None:
    """`supervisor check` exits 2 and says why a small prefetch would deadlock."""
    config = write_config(
        tmp_path,
        {"small": broker.job("amqp://localhost/", "q", every_records=1000, extra="prefetch = 10")},
    )
    checked = _cli(config, "check")
    assert checked.returncode == 2
    assert "source.prefetch: prefetch = 10 is below checkpoint.every_records (1000)" in (
        checked.stdout + checked.stderr
    )


@pytest.mark.parametrize("poison", ["records", "dead_letter_exchange"])
def test_a_poison_message_is_handled_by_the_chosen_policy(
    rabbit_server: RabbitServer, tmp_path: Path, poison: str
) -> None:
    """A quorum-queue message delivered more than max_deliveries times goes to the job's
    dead-letter file (poison = "records") or to the queue's dead-letter exchange; the
    others are written; the queue ends empty."""
    queue = f"poison-{poison}"
    url = rabbit_server.url
    broker.run(broker.declare(url, queue, quorum=True, dead_letter_exchange=f"{queue}-dlx"))
    broker.run(broker.publish(url, queue, broker.numbered(1)))
    broker.run(broker.bounce(url, queue, 3))
    broker.run(broker.publish(url, queue, broker.numbered(99, start=1)))
    extra = f'max_deliveries = 3\npoison = "{poison}"'
    job = broker.job(url, queue, extra=extra) + (
        '\n[records]\non_error = "dead_letter"\ndead_letter = "../dead.jsonl"\n'
    )
    config = write_config(tmp_path, {"poison": job})
    out = tmp_path / "out.jsonl"
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    try:
        broker.wait_until_written(daemon, out, 99)  # seq 1 to 99 (seq 0 is the poison)
    finally:
        assert daemon.stop() == 0
    assert sorted(broker.seqs(out)) == list(range(1, 100))
    dead_file = tmp_path / "dead.jsonl"
    dead_queue = broker.run(broker.take_all(url, f"{queue}.dead"))
    if poison == "records":
        [letter] = [json.loads(line) for line in dead_file.read_text().splitlines()]
        assert "delivered 4 times, more than source.max_deliveries (3)" in letter["error"]
        assert json.loads(letter["record"]["data"]) == {"seq": 0}
        assert dead_queue == []
    else:
        assert not dead_file.exists()
        assert [json.loads(m.body) for m in dead_queue] == [{"seq": 0}]
    assert broker.run(broker.count(url, queue)) == 0
