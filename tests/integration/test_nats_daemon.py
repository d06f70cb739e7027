"""The nats connector under the real daemon: broker down and back, kill -9, SIGTERM, two
daemons sharing a durable consumer, poison messages, and exactly-once publishing."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import nats_support as ns
from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli
from tests.servers import NatsServer

pytestmark = pytest.mark.slow

PACED = '[processor]\nfunction = "tests.nats_support:paced"\n'


def _state(config: Path, job: str) -> dict[str, object]:
    views = json.loads(run_cli(config, "status", "--json").stdout)
    return next(view for view in views if view["job"] == job)


def _daemon(config: Path) -> DaemonProcess:
    daemon = DaemonProcess(config)
    daemon.keep_draining()
    return daemon


@pytest.fixture
def stream(nats_server: NatsServer) -> Iterator[NatsServer]:
    ns.run(ns.make_stream(nats_server, "S", ["s.>"]))
    yield nats_server


def _assert_all_once_or_repeated_within(seen: list[int], count: int, bound: int) -> None:
    assert sorted(set(seen)) == list(range(count)), "records lost"
    repeats = sum(n - 1 for n in Counter(seen).values())
    assert repeats <= bound, f"{repeats} repeats, more than {bound}"


def test_replay_job_rides_out_a_broker_restart_and_a_kill(
    stream: NatsServer, tmp_path: Path
) -> None:
    """Broker killed: RETRYING with a clear error; back: RUNNING. Daemon SIGKILLed: nothing
    lost, repeats within one checkpoint."""
    count = 3000
    ns.run(ns.publish(stream, "s.a", [{"seq": n} for n in range(count)]))
    config = write_config(tmp_path, {"r": ns.nats_job(stream.url) + PACED})
    daemon = _daemon(config)
    daemon.wait_logged("job.checkpoint", job="r")
    stream.kill()
    daemon.wait_logged("job.state_changed", job="r", to="retrying")
    error = str(_state(config, "r")["error"])
    assert "BrokerUnavailable" in error and stream.url in error, error
    stream.start()
    daemon.wait_logged("job.state_changed", job="r", to="running")
    daemon.process.kill()
    daemon.stop()
    daemon = _daemon(config)
    daemon.wait_logged("job.checkpoint", job="r", offset=count, timeout=120)

    # `progress` is refreshed at most once a second: wait for the one after the last read.
    def position() -> object:
        source = _state(config, "r")["source"]
        return source.get("position") if isinstance(source, dict) else None

    ns.wait_until(lambda: position() == count, 30, "progress")
    progress = _state(config, "r")["source"]
    assert isinstance(progress, dict)
    assert (progress["mode"], progress["position"], progress["lag"]) == ("replay", count, 0)
    daemon.stop()
    # Each interruption repeats at most one checkpoint (500 records).
    _assert_all_once_or_repeated_within(
        ns.seqs(ns.jsonl_records(tmp_path / "out.jsonl")), count, 2 * 500
    )


def test_sigterm_repeats_nothing_in_either_mode(stream: NatsServer, tmp_path: Path) -> None:
    """A clean stop acknowledges (shared) or checkpoints (replay) all it read: no repeats."""
    count = 2000
    ns.run(ns.publish(stream, "s.a", [{"seq": n} for n in range(count)]))
    jobs = {
        "replay": ns.nats_job(stream.url, sink='type = "jsonl"\npath = "../replay.jsonl"') + PACED,
        "shared": ns.nats_job(
            stream.url,
            'durable = "w"\nack_wait = "3s"',
            sink='type = "jsonl"\npath = "../shared.jsonl"',
        )
        + PACED,
    }
    config = write_config(tmp_path, jobs)
    daemon = _daemon(config)
    daemon.wait_logged("job.checkpoint", job="replay")
    daemon.wait_logged("job.checkpoint", job="shared")
    assert daemon.stop() == 0
    daemon = _daemon(config)
    for name in ("replay", "shared"):
        path = tmp_path / f"{name}.jsonl"
        ns.wait_until(lambda p=path: len(ns.jsonl_records(p)) >= count, 60, name)
    daemon.stop()
    assert ns.seqs(ns.jsonl_records(tmp_path / "replay.jsonl")) == list(range(count))
    # Shared mode promises no order (messages a stop caught in flight come back later).
    assert sorted(ns.seqs(ns.jsonl_records(tmp_path / "shared.jsonl"))) == list(range(count))


def test_two_daemons_share_a_durable_consumer_one_killed_repeatedly(
    stream: NatsServer, tmp_path: Path
) -> None:
    """Two daemons split one consumer; one is SIGKILLed three times: every message is
    processed by one of them, none lost."""
    count = 6000
    job = ns.nats_job(stream.url, 'durable = "w"\nack_wait = "2s"') + PACED
    steady = write_config(tmp_path / "a", {"w": job})
    victim_config = write_config(tmp_path / "b", {"w": job})
    publisher = threading.Thread(
        target=ns.run, args=(ns.publish(stream, "s.a", [{"seq": n} for n in range(count)]),)
    )
    first = _daemon(steady)
    victim = _daemon(victim_config)
    publisher.start()
    for _ in range(3):
        victim.wait_logged("job.checkpoint", job="w")
        victim.process.kill()
        victim.stop()
        victim = _daemon(victim_config)
    publisher.join()

    def everything() -> list[int]:
        return ns.seqs(ns.jsonl_records(tmp_path / "a" / "out.jsonl")) + ns.seqs(
            ns.jsonl_records(tmp_path / "b" / "out.jsonl")
        )

    ns.wait_until(lambda: set(everything()) >= set(range(count)), 90, "all processed")
    first.stop()
    victim.stop()
    seen = everything()
    assert ns.seqs(ns.jsonl_records(tmp_path / "a" / "out.jsonl")), "the steady daemon got none"
    # Each kill repeats at most what the victim held: one checkpoint of 500.
    _assert_all_once_or_repeated_within(seen, count, 3 * 500)


def test_poison_message_reaches_the_dead_letter_file(stream: NatsServer, tmp_path: Path) -> None:
    """A message that kills the daemon each time is dead-lettered after max_deliveries,
    and the messages after it are processed."""
    ns.run(ns.publish(stream, "s.a", [{"seq": 0}, {"poison": True}, {"seq": 1}]))
    job = ns.nats_job(
        stream.url,
        'durable = "w"\nack_wait = "2s"\nmax_deliveries = 2',
        checkpoint='every_records = 1\ninterval = "1s"',
    )
    job += '[processor]\nfunction = "tests.nats_support:crash_on_poison"\n'
    job += '[records]\non_error = "dead_letter"\ndead_letter = "../dead.jsonl"\n'
    config = write_config(tmp_path, {"p": job})
    for _ in range(2):  # delivered twice, crashing the daemon each time
        assert DaemonProcess(config).finish(timeout=60) == 3
    daemon = _daemon(config)
    out = tmp_path / "out.jsonl"
    dead_letters = tmp_path / "dead.jsonl"
    ns.wait_until(lambda: ns.jsonl_records(dead_letters), 60, "the poison dead-lettered")
    daemon.stop()
    dead = ns.jsonl_records(dead_letters)
    assert len(dead) == 1 and json.loads(dead[0]["record"]["data"]) == {"poison": True}
    assert "more than source.max_deliveries = 2" in dead[0]["error"]
    assert ns.seqs(ns.jsonl_records(out)) == [0, 1]


def test_sink_with_message_ids_is_exactly_once_across_kills(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """generate -> nats, the daemon SIGKILLed three times: the stream holds each record
    exactly once (the duplicate window drops what a kill made the next attempt repeat)."""
    count = 6000
    ns.run(ns.make_stream(nats_server, "OUT", ["out.>"]))
    job = f"""
        [source]
        type = "generate"
        count = {count}
        rate = 2000

        [sink]
        type = "nats"
        url = "{nats_server.url}"
        subject = "out.records"
        stream = "OUT"

        [checkpoint]
        every_records = 500
        interval = "1s"
        {ns.RETRY_FAST}
    """
    config = write_config(tmp_path, {"g": job})
    for kill in range(3):
        daemon = _daemon(config)
        daemon.wait_logged("job.checkpoint", job="g")
        daemon.wait_logged("job.checkpoint", job="g", offset=(kill + 2) * 500, timeout=60)
        daemon.process.kill()
        daemon.stop()
    assert DaemonProcess(config, "--exit-when-idle").finish(timeout=120) == 0
    stored = ns.seqs(ns.run(ns.stream_payloads(nats_server, "OUT")))
    assert sorted(stored) == list(range(count))


def test_bad_input_gives_clear_errors_and_never_shows_a_secret(tmp_path: Path) -> None:
    """Malformed URL: check fails naming the key. Unreachable: RETRYING, a clear error.
    Wrong password: SUSPENDED, a clear error. Non-UTF-8 and huge payloads: dead letter and
    sink, nothing lost. No secret in the log, status, events or state directory."""
    from tests.servers import free_port, require_module

    require_module("nats", "nats")
    server = NatsServer(tmp_path / "srv", user="app", password="right-pass-4567")
    (tmp_path / "srv").mkdir()
    server.start()
    try:
        auth = {"user": "app", "password": "right-pass-4567"}
        ns.run(ns.make_stream(server, "S", ["s.>"], auth=auth))
        huge = "x" * 900_000
        ns.run(ns.publish(server, "s.a", [{"seq": 0}, b"\xff\xfe", huge, {"seq": 1}], **auth))
        (tmp_path / "wrong").write_text("wrong-pass-8910\n")
        good = ns.nats_job(server.url, 'user = "app"\npassword_env = "NATS_PW"')
        good += '[records]\non_error = "dead_letter"\ndead_letter = "../dead.jsonl"\n'
        wrong = ns.nats_job(server.url, 'user = "app"\npassword_file = "../wrong"')
        wrong = "suspend_on_failure = true\n" + wrong
        gone = ns.nats_job(f"nats://127.0.0.1:{free_port()}", 'connect_timeout = "1s"')
        gone = gone.replace("../out.jsonl", "../gone.jsonl")
        wrong = wrong.replace("../out.jsonl", "../wrong.jsonl")
        config = write_config(tmp_path, {"good": good, "wrong": wrong, "gone": gone})

        bad_url = write_config(
            tmp_path / "bad", {"b": ns.nats_job("http://user:url-pass-1213@host:4222")}
        )
        checked = run_cli(bad_url, "check")
        assert checked.returncode == 2
        assert "source.url: expected nats://host:port or tls://host:port" in checked.stderr
        assert "url-pass-1213" not in checked.stderr + checked.stdout

        daemon = DaemonProcess(config, env={"NATS_PW": "right-pass-4567"})
        daemon.keep_draining()
        daemon.wait_logged("job.state_changed", job="wrong", to="suspended")
        daemon.wait_logged("job.state_changed", job="gone", to="retrying")
        out = tmp_path / "out.jsonl"
        ns.wait_until(lambda: 1 in ns.seqs(ns.jsonl_records(out)), 60, "good job done")
        status = run_cli(config, "status")
        as_json = run_cli(config, "status", "--json").stdout
        detail = run_cli(config, "status", "wrong").stdout
        events = run_cli(config, "events").stdout
        daemon.stop()
    finally:
        server.kill()

    views = {view["job"]: view for view in json.loads(as_json)}
    assert "refused the credentials" in views["wrong"]["error"]
    assert "cannot connect to nats://127.0.0.1:" in views["gone"]["error"]
    assert "Traceback" not in status.stdout
    records = ns.jsonl_records(out)
    assert [r for r in records if isinstance(r, dict)] == [{"seq": 0}, {"seq": 1}]
    assert huge in records
    dead = ns.jsonl_records(tmp_path / "dead.jsonl")
    assert [d["record"]["data_base64"] for d in dead] == ["//4="]
    shown = status.stdout + as_json + detail + events + json.dumps(daemon.events)
    shown += "".join(
        p.read_text(errors="replace") for p in (tmp_path / "state").iterdir() if p.is_file()
    )
    for secret in ("right-pass-4567", "wrong-pass-8910"):
        assert secret not in shown
