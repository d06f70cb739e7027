"""Issue 14's daemon lifecycle defects: the lock on the state directory (real daemon
processes), and a shutdown that a slow `close()` cannot hold past `shutdown_timeout` (a
real daemon, and in-process on virtual time)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor.config.loader import load_config
from supervisor.daemon import Supervisor
from supervisor.states import JobState
from tests.conftest import virtual_time_backend
from tests.daemon_process import DaemonProcess, write_config
from tests.in_memory_store import InMemorySnapshotStore
from tests.integration.test_reload import IN_PROCESS, QUICK
from tests.lifecycle import eventually, read_config_on_virtual_time
from tests.slow_parts import World

REPO = Path(__file__).resolve().parent.parent.parent

DAEMON = """\
[supervisor]
jobs = "jobs/*.toml"
state_dir = "{state}"
control_socket = "{socket}"
log_format = "json"
log_level = "info"
shutdown_timeout = "{timeout}"
"""
TICKS = """
    [source]
    type = "generate"
    rate = 50
    [sink]
    type = "null"
    [checkpoint]
    interval = "100ms"
"""
SLOW_CLOSE = """
    [source]
    type = "generate"
    rate = 50
    [sink]
    type = "python"
    class = "tests.slow_parts:SlowCloseSink"
    seconds = 20.0
    [checkpoint]
    interval = "100ms"
"""


def _daemon_file(root: Path, state: Path, socket: str, *, timeout: str = "10s") -> Path:
    jobs = {"ticks": TICKS}
    return write_config(root, jobs, DAEMON.format(state=state, socket=socket, timeout=timeout))


def _start(config: Path) -> DaemonProcess:
    # The python sink of some tests lives in this repository's tests package.
    return DaemonProcess(config, env={"PYTHONPATH": str(REPO)})


def _kill_if_running(process: DaemonProcess) -> None:
    if process.process.poll() is None:
        process.kill()


def _outcome(process: DaemonProcess) -> tuple[int | None, list[str]]:
    """Read the log until the daemon listens (None) or exits (its code), and the raw lines."""
    for event in process.iter_events():
        if event.get("event") == "control.listening":
            return None, []
    code = process.finish(timeout=30)
    return code, [e["text"] for e in process.events if e.get("event") == "raw"]


@pytest.mark.slow
@pytest.mark.parametrize("socket", ["same", "other"])
def test_a_second_daemon_on_a_locked_state_directory_exits_1_and_touches_nothing(
    tmp_path: Path, socket: str
) -> None:
    """A second daemon on the same state directory exits 1 naming the holder's PID, and
    leaves the first one's temp files alone (14.3: it deleted them, or ran every job twice)."""
    state = tmp_path / "state"
    first = _start(_daemon_file(tmp_path / "one", state, str(tmp_path / "one.sock")))
    first.wait_for("control.listening")
    first.keep_draining()
    in_flight = state / ".ticks.snapshot.0123456789abcdef.tmp"
    in_flight.write_bytes(b"a write in flight")
    second_socket = str(tmp_path / ("one.sock" if socket == "same" else "two.sock"))
    second = _start(_daemon_file(tmp_path / "two", state, second_socket))
    try:
        code, lines = _outcome(second)
    finally:
        _kill_if_running(second)
    try:
        assert in_flight.read_bytes() == b"a write in flight"
        assert code == 1, "the second daemon ran on a state directory in use"
        message = "".join(lines)
        assert f"pid {first.process.pid}" in message, message
        assert str(state) in message
        assert first.process.poll() is None
    finally:
        assert first.stop() == 0


@pytest.mark.slow
def test_the_lock_file_is_private_and_names_the_holder(tmp_path: Path) -> None:
    """The lock file is a 0600 regular file holding the running daemon's PID."""
    state = tmp_path / "state"
    process = _start(_daemon_file(tmp_path, state, str(tmp_path / "s.sock")))
    process.wait_for("control.listening")
    process.keep_draining()
    try:
        lock = state / "supervisor.lock"
        info = lock.lstat()
        assert oct(info.st_mode & 0o7777) == oct(0o600)
        assert lock.read_text().strip() == str(process.process.pid)
    finally:
        assert process.stop() == 0
    # Released at exit: the next daemon runs.
    again = _start(_daemon_file(tmp_path, state, str(tmp_path / "s.sock")))
    again.wait_for("control.listening")
    again.keep_draining()
    assert again.stop() == 0


@pytest.mark.slow
def test_a_symlink_at_the_lock_name_is_refused(tmp_path: Path) -> None:
    """A symlink planted at the lock file's name is never followed: the daemon exits 1."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (state / "supervisor.lock").symlink_to(target)
    process = _start(_daemon_file(tmp_path, state, str(tmp_path / "s.sock")))
    try:
        code, lines = _outcome(process)
    finally:
        _kill_if_running(process)
    assert code == 1
    assert "supervisor.lock" in "".join(lines)
    assert target.read_text() == "untouched"


@pytest.mark.slow
def test_sigterm_with_a_slow_close_exits_0_at_the_shutdown_timeout(tmp_path: Path) -> None:
    """SIGTERM with a 20 s sink close: the attempt is cancelled at the 1 s shutdown_timeout,
    logged by job, and the daemon exits 0 (14.4: it took 20 s and exited 1 with a
    BrokenResourceError)."""
    daemon = DAEMON.format(state="state", socket="s.sock", timeout="1s")
    config = write_config(tmp_path, {"slow": SLOW_CLOSE}, daemon)
    process = _start(config)
    first_change = process.wait_for("job.state_changed", job="slow")
    assert first_change["to"] == "running", first_change
    started = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    code = process.finish(timeout=60)
    took = time.monotonic() - started
    assert code == 0, process.events[-10:]
    assert took < 10, f"shutdown took {took:.1f} s with a 1 s shutdown_timeout"
    cancelled = [e for e in process.events if e.get("event") == "job.attempt_cancelled"]
    assert [e["job"] for e in cancelled] == ["slow"]
    assert not [e for e in process.events if e.get("event") == "raw"]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [virtual_time_backend()])
@pytest.mark.parametrize("held", ["close", "close_and_removed"])
async def test_the_shutdown_timeout_cuts_a_slow_close_short(tmp_path: Path, held: str) -> None:
    """On virtual time: a 20 s close (of a running job, or of one a reload removed) is
    cancelled at the 5 s shutdown_timeout, logged with the job name, and `run` returns
    cleanly (14.4: it waited the 20 s, then raised BrokenResourceError)."""
    config = write_config(tmp_path, {"orders": QUICK, "other": QUICK}, IN_PROCESS)
    world = World()
    daemon = Supervisor(
        load_config(config),
        store=InMemorySnapshotStore(),
        components=world.components,
        control_socket=False,
        read_config=read_config_on_virtual_time,
    )
    with capture_logs() as logs, anyio.fail_after(600):
        async with anyio.create_task_group() as tasks:
            await tasks.start(daemon.run)
            await eventually(lambda: daemon.owners["orders"].state is JobState.RUNNING)
            world.sinks["orders"].close_seconds = 20.0
            if held == "close_and_removed":
                (tmp_path / "jobs" / "orders.toml").unlink()
                await daemon.reload()
                await eventually(lambda: world.sinks["orders"].closing)
            stopped_at = anyio.current_time()
            daemon.request_stop()
    assert anyio.current_time() - stopped_at == pytest.approx(5.0, abs=0.5)
    cancelled = [e for e in logs if e["event"] == "job.attempt_cancelled"]
    assert [e["job"] for e in cancelled] == ["orders"]
    assert world.sinks["orders"].open_now == 0
