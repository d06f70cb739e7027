"""`supervisor top` in a real terminal (tmux, 80x24), and as plain output in a pipe."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.observed import Observed, observed
from tests.servers import require

__all__ = ["observed"]


@pytest.fixture
def tmux(observed: Observed) -> Iterator[tuple[str, str]]:
    """A detached 80x24 tmux session running `supervisor top`; yields (tmux, session)."""
    binary = require("tmux", "tmux")
    session = f"top-{time.monotonic_ns()}"
    command = f"{sys.executable} -m supervisor top -c {observed.config}"
    subprocess.run(
        [binary, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command],
        check=True,
        timeout=30,
    )
    try:
        yield binary, session
    finally:
        subprocess.run([binary, "kill-session", "-t", session], check=False, timeout=30)


def _screen(tmux: tuple[str, str]) -> list[str]:
    binary, session = tmux
    shown = subprocess.run(
        [binary, "capture-pane", "-p", "-t", session],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return shown.stdout.splitlines()


def _wait_screen(tmux: tuple[str, str], text: str, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _screen(tmux)
        if any(text in line for line in lines):
            return lines
        assert time.monotonic() < deadline, f"{text!r} never shown; screen: {lines}"
        time.sleep(0.1)


def _alive(tmux: tuple[str, str]) -> bool:
    binary, session = tmux
    found = subprocess.run([binary, "has-session", "-t", session], capture_output=True, check=False)
    return found.returncode == 0


def test_top_shows_jobs_sorts_and_quits_in_80x24(tmux: tuple[str, str]) -> None:
    """Both jobs with state and error, within 80 columns; `r` sorts by rate (the running
    job first), `n` by name again; `q` quits."""
    binary, session = tmux
    lines = _wait_screen(tmux, "flowing")
    assert all(len(line) <= 80 for line in lines)
    rows = [line for line in lines if line.startswith(("broken", "flowing"))]
    assert rows[0].startswith("broken") and "suspended" in rows[0] and "ValueError" in rows[0]
    assert "running" in rows[1]
    subprocess.run([binary, "send-keys", "-t", session, "r"], check=True, timeout=30)
    lines = _wait_screen(tmux, "sort: rate")
    rows = [line for line in lines if line.startswith(("broken", "flowing"))]
    assert rows[0].startswith("flowing")
    subprocess.run([binary, "send-keys", "-t", session, "q"], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while _alive(tmux):
        assert time.monotonic() < deadline, "top did not quit on q"
        time.sleep(0.1)


def test_top_prints_plain_repeated_tables_when_not_a_terminal(observed: Observed) -> None:
    """Piped, `top` prints the table again each interval, with no terminal control codes."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "supervisor",
            "top",
            "-c",
            str(observed.config),
            "--interval",
            "0.1s",
            "--iterations",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("supervisor top") == 3
    assert "\x1b" not in result.stdout
    assert result.stdout.count("suspended") >= 3
