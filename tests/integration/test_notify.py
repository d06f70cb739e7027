"""sd_notify: what the daemon tells a (fake) service manager, and when."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from supervisor.notify import SystemdNotifier, status_line
from supervisor.states import JobState
from tests.daemon_process import DaemonProcess, write_config

DAEMON = '[supervisor]\nlog_format = "json"\n'
JOB = """
    [source]
    type = "generate"
    rate = 10
    [sink]
    type = "null"
"""


def _receive(receiver: socket.socket) -> list[str]:
    return receiver.recv(4096).decode().splitlines()


@pytest.mark.slow
def test_ready_status_watchdog_and_stopping(tmp_path: Path) -> None:
    """READY=1 only once the control socket exists, then STATUS=, WATCHDOG=1 pings, STOPPING=1."""
    config = write_config(tmp_path, {"ticks": JOB}, DAEMON)
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(tmp_path / "notify.sock"))
    receiver.settimeout(30)
    process = DaemonProcess(
        config, env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "200000"}
    )
    process.keep_draining()
    try:
        messages: list[str] = []
        while "READY=1" not in messages:
            messages += _receive(receiver)
        assert (tmp_path / "supervisor.sock").exists()
        assert any(m.startswith("STATUS=") for m in messages)

        pings, started = 0, time.monotonic()
        while pings < 5:
            batch = _receive(receiver)
            pings += batch.count("WATCHDOG=1")
            messages += batch
        # Every 100 ms (half of WATCHDOG_USEC): five pings cannot come in under 0.3 s.
        assert time.monotonic() - started >= 0.3
        assert "STATUS=1 running" in messages

        process.process.send_signal(signal.SIGHUP)  # reload
        while "RELOADING=1" not in messages:
            messages += _receive(receiver)
        reloading = messages.index("RELOADING=1")
        assert messages[reloading + 1].startswith("MONOTONIC_USEC=")
        while "READY=1" not in messages[reloading:]:
            messages += _receive(receiver)

        process.process.send_signal(signal.SIGTERM)
        while "STOPPING=1" not in messages:
            messages += _receive(receiver)
    finally:
        assert process.stop() == 0
        receiver.close()


def test_nothing_is_sent_without_notify_socket() -> None:
    """With NOTIFY_SOCKET unset the notifier is off and sending is a no-op."""
    notifier = SystemdNotifier(environ={})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.send("READY=1")


def test_watchdog_is_half_of_watchdog_usec_for_this_process_only() -> None:
    """WATCHDOG_USEC=2s gives a 1 s ping; a WATCHDOG_PID of another process disables it."""
    assert SystemdNotifier(environ={"WATCHDOG_USEC": "2000000"}).watchdog_interval == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    assert SystemdNotifier(environ=other).watchdog_interval is None


def test_status_line_counts_states_in_order() -> None:
    """The STATUS= summary counts jobs per state, in the order states are declared."""
    states = [JobState.SUSPENDED, JobState.RUNNING, JobState.RUNNING, JobState.RETRYING]
    assert status_line(states) == "2 running, 1 retrying, 1 suspended"
    assert status_line([]) == "no jobs"
