"""Running the real daemon as a subprocess, and reading its JSON log as events."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

DAEMON_TOML = """\
[supervisor]
jobs = "jobs/*.toml"
state_dir = "state"
control_socket = "supervisor.sock"
log_format = "json"
log_level = "debug"
shutdown_timeout = "10s"
"""


def write_config(root: Path, jobs: dict[str, str], daemon: str = DAEMON_TOML) -> Path:
    """A daemon file and one job file per entry in `root`; returns the daemon file."""
    (root / "jobs").mkdir(parents=True, exist_ok=True)
    (root / "supervisor.toml").write_text(daemon)
    for name, body in jobs.items():
        (root / "jobs" / f"{name}.toml").write_text(textwrap.dedent(body))
    return root / "supervisor.toml"


class DaemonProcess:
    """`supervisor run` in a subprocess; its stderr is read as JSON log events."""

    def __init__(
        self,
        config: Path,
        *extra: str,
        env: dict[str, str] | None = None,
        wrapper: tuple[str, ...] = (),
    ) -> None:
        """`wrapper`: a command that execs the daemon's command line given after it
        (e.g. ``unshare``), so the daemon keeps this process's pid and pipes."""
        base = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            base.pop(name, None)
        env = {**base, **(env or {})}
        self.process = subprocess.Popen(
            [*wrapper, sys.executable, "-m", "supervisor", "run", "-c", str(config), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.events: list[dict[str, Any]] = []
        self._drain: threading.Thread | None = None
        self._logged = threading.Condition()
        """Notified by the draining thread after each event it reads, and at the log's end."""
        self._log_ended = False

    def _stderr(self) -> IO[bytes]:
        assert self.process.stderr is not None
        return self.process.stderr

    def iter_events(self) -> Iterator[dict[str, Any]]:
        """Log events as the daemon writes them (blocks on the pipe; ends at exit)."""
        for line in self._stderr():
            try:
                event: dict[str, Any] = json.loads(line)
            except ValueError:
                event = {"event": "raw", "text": line.decode(errors="replace")}
            self.events.append(event)
            yield event

    def wait_for(self, name: str, count: int = 1, **fields: Any) -> dict[str, Any]:
        """Block until the `count`-th event `name` with `fields`; fail if the daemon exits."""
        seen = 0
        for event in self.iter_events():
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                seen += 1
                if seen == count:
                    return event
        raise AssertionError(
            f"daemon exited ({self.process.wait()}) before {name} {fields}; "
            f"last events: {self.events[-10:]}"
        )

    def keep_draining(self) -> None:
        """Read the rest of the log in a thread, so a chatty daemon never blocks on the pipe;
        `wait_logged` then waits for what that thread reads."""
        self._drain = threading.Thread(target=self._drain_log)
        self._drain.start()

    def _drain_log(self) -> None:
        try:
            for _ in self.iter_events():
                with self._logged:
                    self._logged.notify_all()
        finally:
            with self._logged:
                self._log_ended = True
                self._logged.notify_all()

    def wait_logged(
        self, name: str, timeout: float = 60, *, since: int = 0, **fields: Any
    ) -> dict[str, Any]:
        """Once `keep_draining`: block until an event `name` with `fields` has been logged
        (already, or from now on); fail if the daemon exits first, or after `timeout`.
        `since`: only events from that index of `events` on (``len(daemon.events)`` taken
        before causing something waits for what happens after)."""

        def found() -> dict[str, Any] | None:
            for event in self.events[since:]:
                if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                    return event
            return None

        with self._logged:
            self._logged.wait_for(lambda: found() is not None or self._log_ended, timeout)
            event = found()
        if event is None:
            raise AssertionError(
                f"no {name} {fields} in {timeout} s or before the daemon exited "
                f"({self.process.poll()}); last events: {self.events[-10:]}"
            )
        return event

    def wait_until(self, done: Callable[[], bool], timeout: float = 120) -> None:
        """Block until `done()` holds, checking it after each event logged (draining the log,
        as `keep_draining`, from the first call on); fail if the daemon exits first."""
        if self._drain is None:
            self.keep_draining()
        with self._logged:
            self._logged.wait_for(lambda: done() or self._log_ended, timeout)
        if not done():
            raise AssertionError(
                f"condition not met in {timeout} s or before the daemon exited "
                f"({self.process.poll()}); last events: {self.events[-10:]}"
            )

    def stop(self) -> int:
        """SIGTERM if still running; wait; release the pipe. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        if self._drain is not None:
            self._drain.join(timeout=60)
        self._stderr().close()
        return code

    def finish(self, timeout: float = 60) -> int:
        """Drain the log and wait for exit; returns the exit code."""
        for _ in self.iter_events():
            pass
        code = self.process.wait(timeout=timeout)
        self._stderr().close()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.finish()


@pytest.fixture
def daemons() -> Iterator[Callable[..., DaemonProcess]]:
    """`DaemonProcess` for the test, each SIGKILLed at teardown if still running (a failed
    test leaves no daemon behind)."""
    started: list[DaemonProcess] = []

    def start(config: Path, *extra: str, **options: Any) -> DaemonProcess:
        daemon = DaemonProcess(config, *extra, **options)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            with contextlib.suppress(Exception):
                daemon.stop()
