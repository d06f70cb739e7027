"""Redis soaks, per mode (replay, shared): the broker killed and restarted mid-stream, and
the daemon SIGKILLed mid-stream. Nothing is lost, repeats stay within one checkpoint per
restart, and the job is RUNNING at the end.

CI-sized by default (10,000 entries, 3 broker kills, 5 daemon kills per mode); the issue's
full size with ``SOAK_FULL=1`` (100,000 entries, 10 broker kills, 20 daemon kills)."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli
from tests.redis_helpers import add, job_toml, plain_client, written
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

FULL = bool(os.environ.get("SOAK_FULL"))
ENTRIES = 100_000 if FULL else 10_000
BROKER_KILLS = 10 if FULL else 3
DAEMON_KILLS = 20 if FULL else 5
EVERY = 3000 if FULL else 700
"""Not a divisor of the chunks added: each chunk leaves entries waiting for the interval
(the window a kill can catch)."""
MODES = pytest.mark.parametrize("group", [None, "g"], ids=["replay", "shared"])


def _config(root: Path, url: str, group: str | None) -> Path:
    source = f'group = "{group}"\nconsumer = "c"\nclaim_idle = "5s"' if group else ""
    job = job_toml(url, source, checkpoint=f'every_records = {EVERY}\ninterval = "500ms"')
    return write_config(root, {"r": job})


def _count(daemon: DaemonProcess, event: str, **fields: object) -> int:
    return sum(
        1
        for logged in list(daemon.events)
        if logged.get("event") == event and all(logged.get(k) == v for k, v in fields.items())
    )


def _finish(daemon: DaemonProcess, config: Path, server: RedisServer, out: Path) -> list[int]:
    """Wait until every entry is written (and, in shared mode, acknowledged); check the job
    is RUNNING; stop the daemon; the entries written."""
    client = plain_client(server.url)

    def done() -> bool:
        if len(set(written(out))) < ENTRIES:
            return False
        groups = client.xinfo_groups("s")
        return all(group["pending"] == 0 for group in groups)

    daemon.wait_until(done, timeout=600)
    (status,) = json.loads(run_cli(config, "status", "--json").stdout)
    assert status["state"] in {"running", "retrying"}
    if status["state"] == "retrying":  # back from the last restart, not yet proven healthy
        daemon.wait_until(lambda: _count(daemon, "job.state_changed", to="running") > 0)
    assert daemon.stop() == 0
    return written(out)


def _check(out: list[int], restarts: int) -> None:
    assert sorted(set(out)) == list(range(ENTRIES)), "entries lost"
    extra = len(out) - ENTRIES
    # Each restart repeats at most what its attempt had not checkpointed: one checkpoint's
    # worth (reads never go past every_records uncommitted).
    assert extra <= restarts * EVERY, (extra, restarts)
    assert max(Counter(out).values()) <= restarts + 1
    print(f"{ENTRIES} entries, {restarts} restarts, {extra} repeats")


@MODES
def test_broker_killed_and_restarted_mid_stream(
    daemons: Callable[..., DaemonProcess],
    tmp_path: Path,
    redis_server: RedisServer,
    group: str | None,
) -> None:
    """redis-server SIGKILLed BROKER_KILLS times while the job streams: RETRYING, back to
    RUNNING by itself, nothing lost."""
    config = _config(tmp_path, redis_server.url, group)
    chunk = ENTRIES // (BROKER_KILLS + 1)
    daemon = daemons(config)
    daemon.keep_draining()
    daemon.wait_logged("job.state_changed", to="running")
    for kill in range(BROKER_KILLS):
        seen = _count(daemon, "job.checkpoint")
        add(redis_server.url, chunk, start=kill * chunk)
        daemon.wait_until(lambda: _count(daemon, "job.checkpoint") > seen)  # noqa: B023
        redis_server.kill()
        daemon.wait_until(lambda: _count(daemon, "job.state_changed", to="retrying") > kill)  # noqa: B023
        redis_server.start()
        # Back to RUNNING by itself (healthy for retry.reset_after) before the next kill.
        daemon.wait_until(lambda: _count(daemon, "job.state_changed", to="running") > kill + 1)  # noqa: B023
    add(redis_server.url, ENTRIES - BROKER_KILLS * chunk, start=BROKER_KILLS * chunk)
    out = _finish(daemon, config, redis_server, tmp_path / "out.jsonl")
    _check(out, BROKER_KILLS)


@MODES
def test_daemon_sigkilled_mid_stream(
    daemons: Callable[..., DaemonProcess],
    tmp_path: Path,
    redis_server: RedisServer,
    group: str | None,
) -> None:
    """The daemon SIGKILLed DAEMON_KILLS times while the job streams: nothing lost, repeats
    within one checkpoint per kill."""
    config = _config(tmp_path, redis_server.url, group)
    chunk = ENTRIES // (DAEMON_KILLS + 1)
    for kill in range(DAEMON_KILLS):
        daemon = daemons(config)
        daemon.keep_draining()
        daemon.wait_logged("job.state_changed", to="running")
        add(redis_server.url, chunk, start=kill * chunk)
        daemon.wait_logged("job.checkpoint")
        daemon.process.kill()
        daemon.stop()
    daemon = daemons(config)
    add(redis_server.url, ENTRIES - DAEMON_KILLS * chunk, start=DAEMON_KILLS * chunk)
    out = _finish(daemon, config, redis_server, tmp_path / "out.jsonl")
    _check(out, DAEMON_KILLS)
