"""The redis source and sink with the real daemon and a real redis-server: what a kill of
the daemon or of the broker may repeat, and that it loses nothing, in both modes."""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from supervisor.connectors.sqlite.sink import table_rows
from tests.daemon_process import DaemonProcess, write_config
from tests.redis_helpers import add, job_toml, plain_client, snapshot_offset, written
from tests.servers import RedisServer

pytestmark = pytest.mark.slow

COUNT = 20_000


def until(daemon: DaemonProcess, done: Callable[[], bool]) -> None:
    """Wait until `done()` holds, checked after each line the daemon logs."""
    daemon.wait_until(done)


def _kill_after_checkpoints(
    daemons: Callable[..., DaemonProcess], config: Path, checkpoints: int = 3
) -> None:
    daemon = daemons(config)
    daemon.wait_for("job.checkpoint", count=checkpoints)
    daemon.kill()


@pytest.mark.parametrize("group", [None, "g"], ids=["replay", "shared"])
def test_sigkill_loses_nothing_and_repeats_only_after_the_checkpoint(
    daemons: Callable[..., DaemonProcess],
    tmp_path: Path,
    redis_server: RedisServer,
    group: str | None,
) -> None:
    """kill -9 mid-stream, restart: every entry written, repeats only uncheckpointed ones."""
    ids = add(redis_server.url, COUNT)
    source = f'group = "{group}"\nconsumer = "c"' if group else ""
    config = write_config(tmp_path, {"r": job_toml(redis_server.url, source)})
    _kill_after_checkpoints(daemons, config)
    committed = snapshot_offset(tmp_path, "r")
    before = len(written(tmp_path / "out.jsonl"))

    daemon = daemons(config)
    until(daemon, lambda: set(written(tmp_path / "out.jsonl")) >= set(range(COUNT)))
    assert daemon.stop() == 0

    out = written(tmp_path / "out.jsonl")
    assert sorted(set(out)) == list(range(COUNT))
    repeats = [n for n, times in Counter(out).items() if times > 1]
    assert max(Counter(out).values()) <= 2
    if group is None:
        first_uncommitted = ids.index(committed) + 1
        assert all(first_uncommitted <= n < before for n in repeats)
    else:
        assert len(repeats) <= before
        assert plain_client(redis_server.url).xpending("s", "g")["pending"] == 0


@pytest.mark.parametrize("group", [None, "g"], ids=["replay", "shared"])
def test_sigterm_repeats_nothing(
    daemons: Callable[..., DaemonProcess],
    tmp_path: Path,
    redis_server: RedisServer,
    group: str | None,
) -> None:
    """A clean stop checkpoints and acks what it wrote: a restart repeats no entry."""
    add(redis_server.url, COUNT)
    source = f'group = "{group}"\nconsumer = "c"' if group else ""
    config = write_config(tmp_path, {"r": job_toml(redis_server.url, source)})
    daemon = daemons(config)
    daemon.wait_for("job.checkpoint", count=3)
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.finish() == 0
    assert len(written(tmp_path / "out.jsonl")) < COUNT

    daemon = daemons(config)
    until(daemon, lambda: len(written(tmp_path / "out.jsonl")) >= COUNT)
    assert daemon.stop() == 0
    out = written(tmp_path / "out.jsonl")
    assert sorted(out) == list(range(COUNT))  # each exactly once
    if group is None:
        assert out == list(range(COUNT))


def test_replay_into_sqlite_is_exactly_once_across_a_sigkill(
    daemons: Callable[..., DaemonProcess], tmp_path: Path, redis_server: RedisServer
) -> None:
    """Replay mode with an offset-keeping sink: no entry lost or repeated after kill -9."""
    add(redis_server.url, COUNT)
    job = job_toml(redis_server.url, sink='type = "sqlite"\npath = "../out.db"')
    config = write_config(tmp_path, {"r": job})
    _kill_after_checkpoints(daemons, config)

    daemon = daemons(config)
    until(daemon, lambda: len(table_rows(tmp_path / "out.db")) >= COUNT)
    assert daemon.stop() == 0
    rows = [int(json.loads(row)["n"]) for row in table_rows(tmp_path / "out.db")]
    assert rows == list(range(COUNT))


@pytest.mark.parametrize("group", [None, "g"], ids=["replay", "shared"])
def test_the_broker_down_and_back_makes_the_job_retry_then_run(
    daemons: Callable[..., DaemonProcess],
    tmp_path: Path,
    redis_server: RedisServer,
    group: str | None,
) -> None:
    """redis-server killed: RETRYING naming the server; restarted: RUNNING, nothing lost."""
    add(redis_server.url, 5000)
    source = f'group = "{group}"\nconsumer = "c"' if group else ""
    config = write_config(tmp_path, {"r": job_toml(redis_server.url, source)})
    daemon = daemons(config)
    daemon.wait_for("job.state_changed", to="running")
    daemon.wait_for("job.checkpoint")
    redis_server.kill()
    retrying = daemon.wait_for("job.state_changed", to="retrying")
    assert "BrokerUnavailable" in retrying["cause"]
    assert (
        f"source.url: redis://127.0.0.1:{redis_server.port}/0 is unreachable" in (retrying["cause"])
    )
    redis_server.start()
    add(redis_server.url, 5000, start=5000)
    daemon.wait_for("job.state_changed", to="running")
    until(daemon, lambda: set(written(tmp_path / "out.jsonl")) >= set(range(10_000)))
    assert daemon.stop() == 0
