"""Exec source soaks: the tap SIGKILLed again and again, then the daemon SIGKILLed again
and again (its programs with it): nothing lost, at most one checkpoint repeated per kill.

Short by default (CI); the issue's full size with SOAK_FULL=1 (100,000 records, 20
kills of each kind).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.exec_helpers import PYTHON, TAP, TARGET, process_state

pytestmark = pytest.mark.slow

FULL = os.environ.get("SOAK_FULL") == "1"
COUNT = 100_000 if FULL else 20_000
TAP_KILLS = 20
DAEMON_KILLS = 20 if FULL else 6
EVERY = 200
"""Records per checkpoint: the most a kill may repeat."""


JSONL_SINK = 'type = "jsonl"\npath = "../out.jsonl"'


def job(pause: float, sink: str = JSONL_SINK) -> str:
    return f"""
        [source]
        type = "exec"
        command = ["{PYTHON}", "{TAP}", "{COUNT}", "10"]
        environment = {{ TAP_PAUSE = "{pause}" }}
        stop_timeout = "2s"

        [sink]
        {sink}

        [checkpoint]
        every_records = {EVERY}
        interval = "30s"

        [retry]
        initial = "10ms"
        max = "50ms"
        max_attempts = 0
    """


def wait_count(daemon: DaemonProcess, name: str, count: int, **fields: Any) -> dict[str, Any]:
    """Once draining: block until `count` events `name` with `fields` have been logged."""

    def matching() -> list[dict[str, Any]]:
        return [
            event
            for event in list(daemon.events)
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items())
        ]

    with daemon._logged:
        daemon._logged.wait_for(lambda: len(matching()) >= count or daemon._log_ended, 120)
    found = matching()
    assert len(found) >= count, f"{len(found)} of {count} {name}; last: {daemon.events[-5:]}"
    return found[count - 1]


def check_output(path: Path, kills: int) -> Counter[int]:
    seen = Counter(json.loads(line)["n"] for line in path.read_text().splitlines())
    assert sorted(seen) == list(range(COUNT)), "records missing"
    repeated = sum(seen.values()) - COUNT
    assert repeated <= kills * EVERY, f"{repeated} repeats for {kills} kills"
    return seen


def test_tap_sigkilled_twenty_times_loses_nothing(tmp_path: Path) -> None:
    """The tap SIGKILLed 20 times mid-stream: retried from its last checkpointed STATE."""
    config = write_config(tmp_path, {"tap": job(0.001)})
    daemon = DaemonProcess(config, "--exit-when-idle")
    daemon.keep_draining()
    rng = random.Random(21)
    for kill in range(1, TAP_KILLS + 1):
        started = wait_count(daemon, "exec.started", kill, role="source")
        checkpoints = len([e for e in list(daemon.events) if e.get("event") == "job.checkpoint"])
        wait_count(daemon, "job.checkpoint", checkpoints + rng.randint(1, 3))
        os.kill(started["pid"], signal.SIGKILL)
    assert daemon.stop() == 0
    # Whatever the last kill left: one more run to the end.
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    seen = check_output(tmp_path / "out.jsonl", TAP_KILLS)
    print(f"tap kills: {TAP_KILLS}, repeats: {sum(seen.values()) - COUNT}")


@pytest.mark.parametrize("sink", ["jsonl", "exec"])
def test_daemon_sigkilled_repeatedly_loses_nothing_and_leaves_no_program(
    tmp_path: Path, sink: str
) -> None:
    """The daemon SIGKILLed mid-stream: its programs die with it; the next daemon resumes
    (into the jsonl sink, or into an exec sink: a Python target confirming each flush)."""
    target = f'type = "exec"\ncommand = ["{PYTHON}", "{TARGET}", "{tmp_path / "out.jsonl"}"]'
    config = write_config(tmp_path, {"tap": job(0.0005, JSONL_SINK if sink == "jsonl" else target)})
    rng = random.Random(17)
    for _ in range(DAEMON_KILLS):
        daemon = DaemonProcess(config)
        daemon.keep_draining()
        pid = daemon.wait_logged("exec.started", role="source")["pid"]
        wait_count(daemon, "job.checkpoint", rng.randint(1, 4))
        timer = threading.Timer(rng.uniform(0, 0.05), daemon.process.kill)
        timer.start()
        timer.join()
        daemon.stop()
        assert _gone(pid), f"tap {pid} outlived the daemon: {process_state(pid)}"
    assert DaemonProcess(config, "--exit-when-idle").finish() == 0
    seen = check_output(tmp_path / "out.jsonl", DAEMON_KILLS)
    print(f"daemon kills ({sink} sink): {DAEMON_KILLS}, repeats: {sum(seen.values()) - COUNT}")


def _gone(pid: int) -> bool:
    ended = threading.Event()
    for _ in range(200):
        if process_state(pid) in (None, "Z", "X"):
            return True
        ended.wait(0.02)
    return False
