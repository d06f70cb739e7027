"""The control plane, end to end: the real daemon, driven only through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli as cli

pytestmark = pytest.mark.slow

DAEMON = """\
[supervisor]
log_format = "json"
log_level = "info"
shutdown_timeout = "10s"
[defaults]
suspend_on_failure = true
"""
TICKS = """
    [source]
    type = "generate"
    rate = 200
    [sink]
    type = "jsonl"
    path = "../ticks.jsonl"
    [checkpoint]
    interval = "200ms"
"""
BROKEN = """
    [source]
    type = "python"
    class = "no_such_module:Source"
    [sink]
    type = "null"
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    config = write_config(tmp_path, {"ticks": TICKS, "broken": BROKEN}, DAEMON)
    process = DaemonProcess(config)
    process.wait_for("control.listening")
    process.wait_for("job.state_changed", job="broken", to="suspended")
    process.keep_draining()
    yield process, config
    process.stop()


def test_status_table_and_json_show_every_job(daemon: tuple[DaemonProcess, Path]) -> None:
    """`status` lists every job; it exits 3 because one job shown is SUSPENDED."""
    _, config = daemon
    table = cli(config, "status")
    assert table.returncode == 3
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["JOB", "STATE", "SINCE"]
    assert [row.split()[:2] for row in rows] == [["broken", "SUSPENDED"], ["ticks", "RUNNING"]]
    assert "PluginError" in rows[0]
    as_json = json.loads(cli(config, "status", "--json").stdout)
    assert {job["job"]: job["state"] for job in as_json} == {
        "broken": "suspended",
        "ticks": "running",
    }


def test_status_of_one_job_shows_cause_traceback_and_snapshot(
    daemon: tuple[DaemonProcess, Path],
) -> None:
    """`status JOB` shows the full cause with its traceback and the snapshot path."""
    _, config = daemon
    detail = cli(config, "status", "broken")
    assert detail.returncode == 3
    assert "cause:       supervisor.errors.PluginError" in detail.stdout
    assert "Traceback (most recent call last)" in detail.stdout
    assert f"{config.parent}/state/broken.snapshot.toml" in detail.stdout
    healthy = cli(config, "status", "ticks")
    assert healthy.returncode == 0


def test_pause_resume_stop_start_and_offset(daemon: tuple[DaemonProcess, Path]) -> None:
    """Each operator verb moves the job as the table says and reports the new state."""
    _, config = daemon
    assert cli(config, "pause", "ticks").stdout == "ticks: PAUSED\n"
    again = cli(config, "pause", "ticks")  # idempotent: scripts may pause twice
    assert (again.returncode, again.stdout) == (0, "ticks: PAUSED (already paused)\n")
    assert cli(config, "resume", "ticks").stdout == "ticks: PENDING\n"
    assert cli(config, "stop", "ticks").stdout == "ticks: STOPPED\n"
    committed = json.loads(cli(config, "offset", "ticks").stdout)
    assert isinstance(committed, int) and committed > 0
    changed = cli(config, "offset", "ticks", "--set", "5")
    assert changed.stdout == f"ticks: offset {committed} -> 5\n"
    assert cli(config, "start", "ticks").stdout == "ticks: PENDING\n"
    running = cli(config, "offset", "ticks", "--set", "1")
    assert running.returncode == 1 and "`supervisor pause ticks` or" in running.stderr


def test_refusals_say_what_to_do(daemon: tuple[DaemonProcess, Path]) -> None:
    """Commands that do not fit, and unknown jobs, exit 1 with a message."""
    _, config = daemon
    retry = cli(config, "retry", "ticks")
    assert retry.returncode == 1 and "not waiting to retry" in retry.stderr
    unknown = cli(config, "pause", "nope")
    assert unknown.returncode == 1 and "no job named nope (jobs: broken, ticks)" in unknown.stderr


def test_events_are_json_lines(daemon: tuple[DaemonProcess, Path]) -> None:
    """`events` prints each state change as one JSON object per line."""
    _, config = daemon
    events = [json.loads(line) for line in cli(config, "events", "broken").stdout.splitlines()]
    assert events[-1]["to"] == "suspended" and events[-1]["job"] == "broken"


def test_no_daemon_exits_4(tmp_path: Path) -> None:
    """With no daemon on the socket, control commands exit 4 and say so."""
    config = write_config(tmp_path, {}, DAEMON)
    result = cli(config, "status")
    assert result.returncode == 4
    assert "no daemon answers" in result.stderr


def test_sigterm_exits_0_and_removes_the_socket(daemon: tuple[DaemonProcess, Path]) -> None:
    """SIGTERM: final checkpoints, exit 0, socket file gone."""
    process, config = daemon
    process.process.send_signal(signal.SIGTERM)
    assert process.process.wait(timeout=30) == 0
    assert not (config.parent / "supervisor.sock").exists()


def test_socket_has_its_mode_even_with_umask_000(tmp_path: Path) -> None:
    """The socket is created with socket_mode, whatever the daemon's umask."""
    daemon_file = DAEMON.replace("[supervisor]\n", '[supervisor]\nsocket_mode = "0600"\n')
    config = write_config(tmp_path, {}, daemon_file)
    previous = os.umask(0)
    try:
        process = DaemonProcess(config)
    finally:
        os.umask(previous)
    process.wait_for("control.listening")
    try:
        assert (tmp_path / "supervisor.sock").stat().st_mode & 0o777 == 0o600
    finally:
        process.process.send_signal(signal.SIGTERM)
        process.finish()


def test_a_live_socket_is_never_replaced(daemon: tuple[DaemonProcess, Path]) -> None:
    """A second daemon on the same socket refuses to start; the first keeps serving."""
    _, config = daemon
    # Its own state directory: on the same one, the directory's lock refuses it first.
    other = write_config(
        config.parent / "other",
        {"ticks": TICKS},
        DAEMON.replace(
            "[supervisor]\n", f'[supervisor]\ncontrol_socket = "{config.parent}/supervisor.sock"\n'
        ),
    )
    second = subprocess.run(
        [sys.executable, "-m", "supervisor", "run", "-c", str(other)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 1
    assert "another daemon is already listening" in second.stderr
    assert cli(config, "status", "ticks").returncode == 0


def test_hostile_clients_do_not_delay_status(daemon: tuple[DaemonProcess, Path]) -> None:
    """Garbage, oversized and stalled clients get errors or time out; status still answers."""
    _, config = daemon
    path = str(config.parent / "supervisor.sock")

    def connect() -> socket.socket:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.settimeout(10)
        client.connect(path)
        return client

    stalled = [connect() for _ in range(20)]  # connect and say nothing
    garbage = connect()
    garbage.sendall(b"\x00\xffnot json\n")
    assert b'"ok": false' in garbage.recv(65536)
    huge = connect()
    huge.sendall(b"x" * (70 * 1024))
    assert b"longer than" in huge.recv(65536)
    started = time.monotonic()
    assert cli(config, "status", "ticks").returncode == 0
    elapsed = time.monotonic() - started
    for client in (*stalled, garbage, huge):
        client.close()
    # Not a timing assertion on the daemon: the stalled clients hold their
    # connections for 5 s, so an answer inside that proves they did not block it.
    assert elapsed < 5


def test_restart_via_cli(daemon: tuple[DaemonProcess, Path]) -> None:
    """`restart` stops a running job after a final checkpoint and starts it again."""
    _, config = daemon
    assert cli(config, "restart", "ticks").stdout == "ticks: PENDING\n"
    events = [json.loads(line) for line in cli(config, "events", "ticks").stdout.splitlines()]
    assert events[-1]["cause"] == "restarted by operator" or events[-1]["to"] == "running"


def test_events_follow_streams_new_changes(daemon: tuple[DaemonProcess, Path]) -> None:
    """`events --follow` prints the history, then each new change as it happens."""
    _, config = daemon
    follower = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "events", "ticks", "--follow", "-c", str(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        first = json.loads(follower.stdout.readline())
        assert first["job"] == "ticks" and first["to"] == "running"
        assert cli(config, "pause", "ticks").returncode == 0
        paused = json.loads(follower.stdout.readline())
        assert (paused["from"], paused["to"]) == ("running", "paused")
    finally:
        follower.terminate()
        follower.wait(timeout=30)
        if follower.stdout is not None:
            follower.stdout.close()


@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
    reason="needs root (to act as a second user) and a system python3 that user can run",
)
def test_a_peer_outside_the_allowed_users_is_refused() -> None:
    """A client of another uid, not in the socket's group, is refused (SO_PEERCRED)."""
    # Reachable by the other user (pytest's own tmp dirs are not); the socket is
    # world-writable, so only the SO_PEERCRED check stands in the way.
    with tempfile.TemporaryDirectory(dir="/tmp") as shared:
        root = Path(shared)
        root.chmod(0o755)
        _check_outsider_is_refused(root)


def _check_outsider_is_refused(root: Path) -> None:
    config = write_config(
        root,
        {"ticks": TICKS},
        DAEMON.replace("[supervisor]\n", '[supervisor]\nsocket_mode = "0666"\n'),
    )
    process = DaemonProcess(config)
    process.wait_for("control.listening")
    try:
        probe = (
            "import socket,sys\n"
            "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "print(s.recv(4096).decode())\n"  # refused before any request is read
        )
        outsider = subprocess.run(
            ["/usr/bin/python3", "-c", probe, str(root / "supervisor.sock")],
            capture_output=True,
            text=True,
            timeout=30,
            user=65534,
            group=65534,
            extra_groups=[],
            check=False,
        )
        assert '"ok": false' in outsider.stdout and "permission denied" in outsider.stdout
        refused = process.wait_for("control.peer_refused")
        assert refused["uid"] == 65534
        assert cli(config, "status", "ticks").returncode == 0  # root still served
    finally:
        process.stop()
