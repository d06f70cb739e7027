"""Issue 14's daemon lifecycle defects, against real daemon processes: the lock on the state
directory, and a shutdown that a slow `close()` cannot hold past `shutdown_timeout`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent

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
