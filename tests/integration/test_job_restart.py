"""What a job's snapshot carries across a real daemon restart (issue 14.7, 14.10, 14.15,
14.17): the real `supervisor run` twice on one state directory, driven through the CLI."""

from __future__ import annotations

import itertools
import json
import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DAEMON_TOML, DaemonProcess, write_config
from tests.helpers import run_cli as _cli

pytestmark = pytest.mark.slow

PLUGINS = '''
from pathlib import Path

from supervisor.errors import FatalError

GATE = Path(__file__).with_name("gate-open")


class Refusing:
    """A source whose server is down: every open fails retryably."""

    def __init__(self, **_: object) -> None:
        pass

    async def open(self, offset: object) -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    async def read(self, max_records: int, wait: float) -> object:
        raise AssertionError("never opened")

    async def close(self) -> None:
        pass


def gated(record: dict) -> dict:
    """Fails fatally from record 30 on until the gate file exists."""
    if record["seq"] >= 30 and not GATE.exists():
        raise FatalError("gate closed")
    return record
'''
JOBS = {
    "flaky": """
        [source]
        type = "python"
        class = "job_plugins:Refusing"
        [sink]
        type = "null"
        [retry]
        initial = "60s"
        max = "60s"
        jitter = false
        max_attempts = 0
    """,
    "held": """
        [source]
        type = "generate"
        rate = 100
        [sink]
        type = "null"
        [checkpoint]
        interval = "200ms"
    """,
    "broken": """
        [source]
        type = "python"
        class = "no_such_module:Source"
        [sink]
        type = "null"
    """,
    "gated": """
        [source]
        type = "generate"
        count = 50
        [processor]
        function = "job_plugins:gated"
        [sink]
        type = "sqlite"
        path = "../gated.db"
        [checkpoint]
        every_records = 10
    """,
}


def _status(config: Path) -> dict[str, dict[str, Any]]:
    jobs = json.loads(_cli(config, "status", "--json").stdout)
    return {job["job"]: job for job in jobs}


def _wait_all(daemon: DaemonProcess, *wanted: Callable[[dict[str, Any]], bool]) -> None:
    """Block until each condition has matched some log event, in any order."""
    missing = list(wanted)
    for event in itertools.chain(list(daemon.events), daemon.iter_events()):
        missing = [condition for condition in missing if not condition(event)]
        if not missing:
            return
    raise AssertionError(f"daemon exited; last events: {daemon.events[-10:]}")


def _changed(job: str, to: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "job.state_changed" and (e["job"], e["to"]) == (job, to)


def _rows(db: Path) -> list[int]:
    with sqlite3.connect(db) as connection:
        return sorted(
            json.loads(r)["seq"] for (r,) in connection.execute("SELECT record FROM records")
        )


def test_state_times_retries_and_chosen_offsets_survive_a_daemon_restart(tmp_path: Path) -> None:
    """After a restart: a retrying job is RETRYING and waits out its backoff, SINCE of
    paused and failed jobs is unchanged, an offset set on a FAILED job is where `start`
    begins, and `start` of a FAILED job with a sqlite sink begins afresh."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "job_plugins.py").write_text(textwrap.dedent(PLUGINS))
    env = {"PYTHONPATH": str(tmp_path / "plugins")}
    config = write_config(tmp_path, JOBS, DAEMON_TOML)

    first = DaemonProcess(config, env=env)
    _wait_all(
        first,
        lambda e: e.get("event") == "control.listening",
        lambda e: e.get("event") == "job.retry_scheduled" and e["job"] == "flaky",
        _changed("broken", "failed"),
        _changed("gated", "failed"),
        _changed("held", "running"),
    )
    first.keep_draining()
    assert _cli(config, "pause", "held").returncode == 0
    assert _cli(config, "offset", "broken", "--set", "5").returncode == 0
    before = _status(config)
    assert _rows(tmp_path / "gated.db") == list(range(30))
    assert first.stop() == 0

    second = DaemonProcess(config, env=env)
    _wait_all(second, lambda e: e.get("event") == "control.listening")
    try:
        after = _status(config)
        # 14.10: still RETRYING with its count, the rest of its 60 s backoff ahead of it.
        assert (after["flaky"]["state"], after["flaky"]["attempt"]) == ("retrying", 1)
        assert after["flaky"]["next_retry_in"] > 30
        assert after["flaky"]["error"].startswith("ConnectionRefusedError")
        # 14.17: SINCE is when the state began, not when this daemon started.
        for job in ("held", "broken", "gated"):
            assert after[job]["state"] == before[job]["state"]
            assert after[job]["since"] == before[job]["since"], job
        # 14.7: the offset chosen on the FAILED job is where `start` begins.
        assert after["broken"]["offset"] == 5
        assert _cli(config, "start", "broken").returncode == 0
        assert json.loads(_cli(config, "offset", "broken").stdout) == 5
        # 14.15: `start` of a FAILED job begins at the source's start, the sqlite sink's
        # own offset notwithstanding: the 30 rows written before are written again.
        (tmp_path / "plugins" / "gate-open").touch()
        assert _cli(config, "start", "gated").returncode == 0
        _wait_all(second, _changed("gated", "finished"))
        assert _rows(tmp_path / "gated.db") == sorted([*range(30), *range(50)])
        failed = [e for e in second.events if e.get("event") == "job.attempt_failed"]
        assert not [e for e in failed if e["job"] == "flaky"], "the backoff was skipped"
    finally:
        second.keep_draining()
        assert second.stop() == 0
