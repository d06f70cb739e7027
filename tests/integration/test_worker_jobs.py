"""Processors in worker processes under the real daemon: order, a worker killed mid-batch,
an import failure, workers gone after stop, SIGTERM and kill -9; and the config keys."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import gone, run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent.parent
ENV = {"PYTHONPATH": str(REPO)}
"""The worker functions are `tests.worker_functions`: importable from the checkout."""


def numbers_file(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"seq": n}) + "\n" for n in range(count)))
    return path


def file_job(source: Path, processor: str, sink: str, every: int = 100) -> str:
    return f"""
        [source]
        type = "file"
        path = "{source}"
        format = "jsonl"
        follow = false

        [processor]
        {processor}

        [sink]
        {sink}

        [checkpoint]
        every_records = {every}
        interval = "1h"

        [retry]
        initial = "10ms"
        jitter = false
    """


def endless_job(workers: str) -> str:
    return f"""
        [source]
        type = "generate"

        [processor]
        function = "tests.worker_functions:where_am_i"
        workers = {workers}

        [sink]
        type = "null"

        [checkpoint]
        every_records = 1000
    """


def test_workers_keep_the_source_order(tmp_path: Path) -> None:
    """Records come out in the source's order through four workers, and through a batch
    function in two."""
    source = numbers_file(tmp_path / "in.jsonl", 10_000)
    each = 'function = "tests.worker_functions:where_am_i"\nworkers = 4'
    config = write_config(
        tmp_path / "each",
        {"each": file_job(source, each, 'type = "jsonl"\npath = "../out.jsonl"', every=3000)},
    )
    assert DaemonProcess(config, "--exit-when-idle", env=ENV).finish() == 0
    lines = [json.loads(line) for line in (tmp_path / "each/out.jsonl").read_text().splitlines()]
    assert [line["record"]["seq"] for line in lines] == list(range(10_000))
    assert len({line["pid"] for line in lines}) == 4

    numbers = tmp_path / "n.jsonl"
    numbers.write_text("".join(json.dumps({"n": n}) + "\n" for n in range(1000)))
    batch = 'batch_function = "tests.worker_functions:double_all"\nworkers = 2'
    config = write_config(
        tmp_path / "batch",
        {"batch": file_job(numbers, batch, 'type = "jsonl"\npath = "../out.jsonl"')},
    )
    assert DaemonProcess(config, "--exit-when-idle", env=ENV).finish() == 0
    out = [json.loads(line)["n"] for line in (tmp_path / "batch/out.jsonl").read_text().split()]
    assert out == [n * 2 for n in range(0, 1000, 2)]


def test_a_worker_killed_mid_batch_fails_the_attempt_and_the_retry_loses_nothing(
    tmp_path: Path,
) -> None:
    """kill -9 of a worker inside a record: the attempt fails naming the signal, the job
    retries, and the sqlite sink (exactly-once) ends with every record once."""
    source = numbers_file(tmp_path / "in.jsonl", 1000)
    config = write_config(
        tmp_path,
        {
            "killed": file_job(
                source,
                'function = "tests.worker_functions:stall_once"\nworkers = 2',
                'type = "sqlite"\npath = "../out.db"',
            )
        },
    )
    env = {**ENV, "WORKER_TEST_MARKER": str(tmp_path / "stalled")}
    daemon = DaemonProcess(config, "--exit-when-idle", env=env)
    daemon.keep_draining()
    daemon.wait_until(lambda: stalled_in(daemon) is not None)
    stalled = stalled_in(daemon)
    started = [
        event["pid"] for event in daemon.events if event.get("event") == "processor.worker.started"
    ]
    assert stalled is not None and len(started) == 2 and stalled in started
    os.kill(stalled, signal.SIGKILL)
    failed = daemon.wait_logged("job.attempt_failed", job="killed")
    assert "processor worker 2 of 2" in failed["error"]
    assert "was killed by SIGKILL" in failed["error"] and not failed["fatal"]
    daemon.wait_logged("job.state_changed", job="killed", to="finished")
    assert daemon.stop() == 0
    with sqlite3.connect(tmp_path / "out.db") as db:
        rows = [json.loads(row[0])["seq"] for row in db.execute("SELECT record FROM records")]
    assert sorted(rows) == list(range(1000))
    assert all(gone(pid) for pid in started)


def stalled_in(daemon: DaemonProcess) -> int | None:
    """The pid of the worker that said, on its stderr (logged by the daemon), it is stalled."""
    for event in list(daemon.events):
        line = event.get("line", "")
        if event.get("event") == "processor.worker.stderr" and line.startswith("stalled in "):
            return int(line.removeprefix("stalled in "))
    return None


def test_a_processor_that_cannot_be_imported_fails_the_job(tmp_path: Path) -> None:
    """Fatal at once (no retries), with the worker's message in the job's error."""
    source = numbers_file(tmp_path / "in.jsonl", 10)
    config = write_config(
        tmp_path,
        {
            "broken": file_job(
                source,
                'function = "tests.no_such_module:fn"\nworkers = 2',
                'type = "null"',
            )
        },
    )
    daemon = DaemonProcess(config, env=ENV)
    daemon.keep_draining()
    failed = daemon.wait_logged("job.attempt_failed", job="broken")
    assert "cannot import module 'tests.no_such_module'" in failed["error"]
    assert failed["fatal"]
    daemon.wait_logged("job.state_changed", job="broken", to="failed")
    status = run_cli(config, "status", "broken")
    assert "in a processor worker: cannot import module" in status.stdout
    daemon.stop()


def worker_pids(daemon: DaemonProcess, count: int) -> list[int]:
    """The pids of the first `count` workers the daemon started, once it checkpointed."""
    daemon.wait_logged("job.checkpoint")
    pids = [e["pid"] for e in daemon.events if e.get("event") == "processor.worker.started"]
    assert len(pids) == count
    assert not any(gone(pid, timeout=0) for pid in pids)
    return pids


def test_daemon_sigkill_takes_the_workers_with_it(tmp_path: Path) -> None:
    """kill -9 of the daemon: its workers die too (parent-death signal), none is orphaned."""
    config = write_config(tmp_path, {"endless": endless_job("2")})
    daemon = DaemonProcess(config, env=ENV)
    daemon.keep_draining()
    pids = worker_pids(daemon, 2)
    daemon.process.kill()
    daemon.process.wait()
    assert all(gone(pid) for pid in pids)
    daemon.stop()


def test_sigterm_and_stop_end_the_workers(tmp_path: Path) -> None:
    """`supervisor stop JOB` ends its workers (the daemon goes on); SIGTERM ends the rest."""
    config = write_config(tmp_path, {"one": endless_job("2"), "two": endless_job('"auto"')})
    daemon = DaemonProcess(config, env=ENV)
    daemon.keep_draining()
    daemon.wait_logged("job.checkpoint", job="one")
    daemon.wait_logged("job.checkpoint", job="two")
    started = [e for e in daemon.events if e.get("event") == "processor.worker.started"]
    one = [e["pid"] for e in started if e["job"] == "one"]
    two = [e["pid"] for e in started if e["job"] == "two"]
    assert len(one) == 2 and len(two) == len(os.sched_getaffinity(0))
    assert run_cli(config, "stop", "one").returncode == 0
    assert all(gone(pid) for pid in one)
    assert not any(gone(pid, timeout=0) for pid in two)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert all(gone(pid) for pid in two)


@pytest.mark.parametrize(
    ("processor", "key", "message"),
    [
        (
            "workers = 0",
            "processor.workers",
            'expected an integer of at least 1 or "auto", got an integer (0)',
        ),
        ("workers = -2", "processor.workers", "got an integer (-2)"),
        ('workers = "2"', "processor.workers", "got a string ('2')"),
        ("workers = true", "processor.workers", "got a boolean (True)"),
        ("workers = 1.5", "processor.workers", "got a number (1.5)"),
        (
            'batch_function = "tests.worker_functions:double_all"',
            "processor.batch_function",
            "expected either processor.function (called per record) or "
            "processor.batch_function (called per batch), not both",
        ),
    ],
)
def test_bad_processor_keys_name_the_file_and_key(
    tmp_path: Path, processor: str, key: str, message: str
) -> None:
    """`supervisor check` names the job file and the dotted key, and says what it expected."""
    table = f'function = "tests.worker_functions:double"\n{processor}'
    config = write_config(
        tmp_path, {"bad": file_job(tmp_path / "in.jsonl", table, 'type = "null"')}
    )
    checked = run_cli(config, "check")
    assert checked.returncode == 2
    assert f"{tmp_path / 'jobs' / 'bad.toml'}: {key}: " in checked.stderr
    assert message in checked.stderr


def test_check_imports_the_batch_function_and_accepts_auto(tmp_path: Path) -> None:
    """`supervisor check` imports a batch function like a function; ``"auto"`` is valid."""
    good = 'batch_function = "tests.worker_functions:double_all"\nworkers = "auto"'
    bad = 'batch_function = "tests.worker_functions:nothing_here"'
    config = write_config(
        tmp_path,
        {
            "good": file_job(tmp_path / "in.jsonl", good, 'type = "null"'),
            "bad": file_job(tmp_path / "in.jsonl", bad, 'type = "null"'),
        },
    )
    checked = run_cli(config, "check")
    assert checked.returncode == 2, checked.stderr
    assert "(1 error(s))" in checked.stderr
    assert f"{tmp_path / 'jobs' / 'bad.toml'}: processor.batch_function: " in checked.stderr
    assert "has no attribute 'nothing_here'" in checked.stderr
