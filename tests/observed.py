"""A real daemon with its HTTP listener on a free port, for the observability tests.

Two jobs: ``flowing`` (a generate source, 2,000 records/s) stays RUNNING; ``broken``
has a processor whose error message is markup and script, and is SUSPENDED at once.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_process import DaemonProcess, write_config

HOSTILE_ERROR = '<script>alert("owned")</script><b onclick="x()">bold</b> & \'quoted\''
"""The message `broken`'s processor raises: the page must show it as text."""

DAEMON_TOML = """\
[supervisor]
jobs = "jobs/*.toml"
state_dir = "state"
control_socket = "supervisor.sock"
log_format = "json"
shutdown_timeout = "10s"
http_listen = "127.0.0.1:0"
sample_interval = "1s"
"""

FLOWING = """\
[source]
type = "generate"
rate = 2000
[sink]
type = "null"
[checkpoint]
interval = "1s"
"""

BROKEN = """\
suspend_on_failure = true
[retry]
max_attempts = 1
[source]
type = "generate"
[processor]
function = "hostile_processor:fail"
[sink]
type = "null"
"""


@dataclass
class Observed:
    daemon: DaemonProcess
    config: Path
    url: str

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path)
        if accept is not None:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str) -> Any:
        status, _, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def state(self, job: str) -> str:
        return str(next(view for view in self.json("/status") if view["job"] == job)["state"])


def start_observed(root: Path, jobs: dict[str, str] | None = None) -> Observed:
    (root / "hostile_processor.py").write_text(
        f"def fail(record):\n    raise ValueError({HOSTILE_ERROR!r})\n"
    )
    config = write_config(
        root, jobs if jobs is not None else {"flowing": FLOWING, "broken": BROKEN}, DAEMON_TOML
    )
    daemon = DaemonProcess(config, env={"PYTHONPATH": str(root)})
    listening = daemon.wait_for("http.listening")
    daemon.keep_draining()
    return Observed(daemon, config, f"http://127.0.0.1:{listening['port']}")


@pytest.fixture
def observed(tmp_path: Path) -> Iterator[Observed]:
    """The daemon of this module's docstring, with `broken` already SUSPENDED."""
    running = start_observed(tmp_path)
    try:
        running.daemon.wait_logged("job.state_changed", job="broken", to="suspended")
        running.daemon.wait_logged("job.state_changed", job="flowing", to="running")
        yield running
    finally:
        running.daemon.stop()
