"""sd_notify without libsystemd: datagrams to $NOTIFY_SOCKET.

Nothing happens when NOTIFY_SOCKET is unset. A send that fails is logged once
and otherwise ignored: systemd being unreachable must never hurt the jobs.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Iterable, Mapping

import structlog

from supervisor.states import JobState

log = structlog.get_logger("supervisor.notify")


class SystemdNotifier:
    """Sends `READY=1`, `STATUS=...`, `WATCHDOG=1`, `STOPPING=1` to the service manager."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: a leading NUL byte on Linux.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self._socket: socket.socket | None = None
        self._warned = False
        self.watchdog_interval = _watchdog_interval(environ)
        """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None."""

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def send(self, *lines: str) -> None:
        if not self._address:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._warned:
                log.warning("notify.failed", socket=self._address, error=str(exc))
                self._warned = True

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def status_line(states: Iterable[JobState]) -> str:
    """'12 running, 1 retrying, 1 suspended', in the order the states are declared."""
    counts = Counter(states)
    parts = [f"{counts[state]} {state.value}" for state in JobState if counts[state]]
    return ", ".join(parts) or "no jobs"


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2 / 1_000_000
    except ValueError:
        return None
