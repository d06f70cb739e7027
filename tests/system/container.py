"""A Debian 12 container with systemd as PID 1, driven through tools/live-systemd.

The test runs on the host; commands run inside with `tools/live-systemd exec`
(nsenter, as root), and files are read and written through `/proc/<pid 1>/root`.
There is no event to wait on across that boundary, so conditions on the
container's state are polled (`wait_until`) with an explicit deadline.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
TOOL = REPO / "tools" / "live-systemd"
UNIT = "stream-supervisor.service"
SUPERVISOR = "/opt/stream-supervisor/bin/supervisor"
POLL_INTERVAL = 0.1
"""Seconds between two looks at the container's state while waiting for a condition."""


def install_block(readme: Path = REPO / "README.md") -> str:
    """The shell block of the README's "Install as a service" section, as written there."""
    section = readme.read_text().split("\n## Install as a service\n", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match is not None, "no ```sh block in the README's 'Install as a service'"
    return match.group(1)


class Container:
    """One booted container; `halt()` powers it off."""

    def __init__(self) -> None:
        subprocess.run([TOOL, "boot"], check=True, timeout=120)
        root = subprocess.run(
            [TOOL, "root"], check=True, timeout=30, capture_output=True, text=True
        ).stdout.strip()
        self.root = Path(root)
        """The container's / as the host sees it."""

    def halt(self) -> None:
        subprocess.run([TOOL, "halt"], check=True, timeout=120)

    def path(self, inside: str) -> Path:
        """The host's path to `inside` (an absolute path in the container)."""
        return self.root / inside.lstrip("/")

    def run(
        self,
        *command: str,
        user: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """Run `command` inside (as root, or as `user`); output captured as text."""
        argv: list[str] = [str(TOOL), "exec"]
        if env:
            argv += ["env", *(f"{key}={value}" for key, value in env.items())]
        if user is not None:
            argv += ["runuser", "-u", user, "--"]
        result = subprocess.run(
            [*argv, *command], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{shlex.join(command)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def sh(self, script: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-ec", script, **kwargs)

    def show(self, *properties: str, unit: str = UNIT) -> dict[str, str]:
        """`systemctl show` of the unit: property -> value."""
        out = self.run(
            "systemctl", "show", "--timestamp=us+utc", "-p", ",".join(properties), unit
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, name: str, unit: str = UNIT) -> str:
        return self.show(name, unit=unit)[name]

    def job(self, name: str) -> dict[str, Any]:
        """One job's row of `supervisor status --json`."""
        rows = json.loads(self.run(SUPERVISOR, "status", "--json", check=False).stdout or "[]")
        matching = [row for row in rows if row["job"] == name]
        assert matching, f"no job {name!r} in {rows}"
        return dict(matching[0])

    def journal(self, *args: str, unit: str = UNIT) -> list[dict[str, Any]]:
        """The unit's journal entries (this boot) as journald's JSON objects."""
        out = self.run("journalctl", "-u", unit, "-b", "--no-pager", "-o", "json", *args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def journal_text(self, lines: int = 300) -> str:
        """The unit's last journal lines with their priorities, for a failure report."""
        try:
            entries = self.journal("-n", str(lines))
        except (AssertionError, subprocess.SubprocessError, ValueError) as exc:
            return f"(journal not available: {exc})"
        return "\n".join(
            f"{entry.get('__REALTIME_TIMESTAMP', '?')} <{entry.get('PRIORITY', '?')}> "
            f"{entry.get('_PID', '?')} {entry.get('MESSAGE', '')}"
            for entry in entries
        )

    def wait_until(self, condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
        """Poll `condition` until it returns something true; its value, or AssertionError."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"not within {timeout:g}s: {what} (last: {value!r})")
            time.sleep(POLL_INTERVAL)

    def wait_for_unit(self, active_state: str, *, timeout: float = 30) -> dict[str, str]:
        """Wait until the unit's ActiveState is `active_state` (and, if active, running)."""

        def reached() -> dict[str, str] | None:
            show = self.show("ActiveState", "SubState", "MainPID", "NRestarts")
            if show["ActiveState"] != active_state:
                return None
            if active_state == "active" and show["SubState"] != "running":
                return None
            return show

        return dict(self.wait_until(reached, timeout=timeout, what=f"{UNIT} {active_state}"))


def main_pid(show: dict[str, str]) -> int:
    return int(show["MainPID"])


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def write_lines(path: Path, lines: Sequence[str], *, append: bool = True) -> None:
    with path.open("a" if append else "w") as file:
        file.writelines(line + "\n" for line in lines)
