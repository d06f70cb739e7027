"""Reload (`supervisor reload` and SIGHUP): all of a valid new set, or nothing."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config
from tests.helpers import run_cli as cli
from tests.test_control import DAEMON

pytestmark = pytest.mark.slow


def _job(rate: int) -> str:
    return f"""
        [source]
        type = "generate"
        rate = {rate}
        [sink]
        type = "null"
    """


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    jobs = {"keep": _job(10), "drop": _job(10), "edit": _job(10), "held": _job(10)}
    config = write_config(tmp_path, jobs, DAEMON)
    process = DaemonProcess(config)
    process.wait_for("control.listening")
    process.keep_draining()
    yield process, config
    process.stop()


def _states(config: Path) -> dict[str, str]:
    return {job["job"]: job["state"] for job in json.loads(cli(config, "status", "--json").stdout)}


def test_reload_adds_removes_and_restarts_only_what_changed(
    daemon: tuple[DaemonProcess, Path],
) -> None:
    """Added jobs start, removed jobs stop, changed jobs restart, the rest are untouched."""
    _, config = daemon
    jobs = config.parent / "jobs"
    assert cli(config, "pause", "held").returncode == 0
    (jobs / "drop.toml").unlink()
    (jobs / "edit.toml").write_text(textwrap.dedent(_job(20)))
    (jobs / "held.toml").write_text(textwrap.dedent(_job(30)))
    (jobs / "new.toml").write_text(textwrap.dedent(_job(10)))
    before = cli(config, "events", "keep").stdout

    result = cli(config, "reload")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["added: new", "removed: drop", "changed: edit, held"]
    states = _states(config)
    assert set(states) == {"keep", "edit", "held", "new"}
    assert states["held"] == "paused"  # keeps its state; the new definition waits for resume
    assert cli(config, "events", "keep").stdout == before  # untouched
    edit_events = [json.loads(e) for e in cli(config, "events", "edit").stdout.splitlines()]
    assert any(e["cause"] == "definition changed by reload" for e in edit_events)
    assert (config.parent / "state" / "drop.snapshot.toml").exists()


def test_an_invalid_set_is_refused_whole(daemon: tuple[DaemonProcess, Path]) -> None:
    """One bad file: reload exits 2 naming it, and no job is added, removed or changed."""
    _, config = daemon
    jobs = config.parent / "jobs"
    (jobs / "new.toml").write_text(textwrap.dedent(_job(10)))
    (jobs / "drop.toml").unlink()
    (jobs / "bad.toml").write_text('[source]\ntype = "generate"\nrate = "fast"\n')
    events_before = cli(config, "events").stdout

    result = cli(config, "reload")

    assert result.returncode == 2
    assert f"{jobs}/bad.toml: source.rate: expected a number" in result.stderr
    assert set(_states(config)) == {"keep", "drop", "edit", "held"}
    assert cli(config, "events").stdout == events_before


def test_sighup_reloads(daemon: tuple[DaemonProcess, Path]) -> None:
    """SIGHUP does what `supervisor reload` does."""
    process, config = daemon
    (config.parent / "jobs" / "new.toml").write_text(textwrap.dedent(_job(10)))
    process.process.send_signal(signal.SIGHUP)
    # The reload is logged; wait for the new job to show up in status.
    for _ in range(200):
        if "new" in _states(config):
            break
    assert "new" in _states(config)


def test_a_sighup_as_soon_as_the_socket_listens_reloads(tmp_path: Path) -> None:
    """Signal handlers are installed before the socket listens: an early SIGHUP never kills."""
    config = write_config(tmp_path, {"keep": _job(10)}, DAEMON)
    process = DaemonProcess(config)
    process.wait_for("control.listening")
    process.process.send_signal(signal.SIGHUP)
    process.wait_for("daemon.reloaded")
    assert process.process.poll() is None
    assert process.stop() == 0
