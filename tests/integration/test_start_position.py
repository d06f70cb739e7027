"""A job's starting position is checkpointed before its first record.

Where a source starts when it has no offset depends on when it opens: the file at
`path` *now*, its end *now*. An attempt that read records and failed before its
first checkpoint used to leave no offset, so the retry started afresh: after a
rotation it read the new file and skipped the renamed one; with ``start = "end"``
it skipped every line appended in between. The kill -9 soak lost the first
10,000 lines of its followed file this way on a loaded machine. The real daemon,
real files, a processor that fails while a switch file exists.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config

pytestmark = pytest.mark.slow

GATE = textwrap.dedent(
    """
    from pathlib import Path

    SWITCH = Path(__file__).with_name("switch")

    def gate(record):
        if SWITCH.exists():
            raise RuntimeError("switched on")
        return record
    """
)


def _job(start: str) -> str:
    return f"""
        [source]
        type = "file"
        path = "../in/app.log"
        start = "{start}"
        poll_interval = "20ms"

        [processor]
        function = "gate:gate"

        [sink]
        type = "jsonl"
        path = "../out/app.jsonl"

        [checkpoint]
        interval = "100ms"

        [retry]
        initial = "50ms"
        max = "50ms"
        jitter = false
    """


def _start(tmp_path: Path, start: str, lines: list[str]) -> tuple[DaemonProcess, Path]:
    for sub in ("in", "out", "plugins"):
        (tmp_path / sub).mkdir()
    (tmp_path / "plugins" / "gate.py").write_text(GATE)
    (tmp_path / "plugins" / "switch").touch()
    (tmp_path / "in" / "app.log").write_text("".join(f"{line}\n" for line in lines))
    config = write_config(tmp_path, {"app": _job(start)})
    daemon = DaemonProcess(config, env={"PYTHONPATH": str(tmp_path / "plugins")})
    return daemon, tmp_path


def _delivered_when_caught_up(daemon: DaemonProcess, root: Path, expected: int) -> list[str]:
    """The sink's lines once a checkpoint has `expected` of them, or once the job has
    checkpointed the end of the file as it is now (caught up: nothing more will come)."""
    sink = root / "out" / "app.jsonl"
    live = root / "in" / "app.log"
    while True:
        event = daemon.wait_for("job.checkpoint", job="app")
        delivered = [json.loads(line) for line in sink.read_text().splitlines()]
        offset = event.get("offset") or {}
        now = live.stat()
        at_end = offset.get("ino") == now.st_ino and offset.get("pos") == now.st_size
        if len(delivered) >= expected or at_end:
            return delivered


def test_a_retry_before_the_first_checkpoint_finishes_the_rotated_file(tmp_path: Path) -> None:
    daemon, root = _start(tmp_path, "beginning", [f"a{n}" for n in range(5)])
    try:
        daemon.wait_for("job.attempt_failed", job="app")  # a0 read, then the processor failed
        log = root / "in" / "app.log"
        log.rename(root / "in" / "app.log.1")  # rotated as logrotate does
        log.write_text("b0\nb1\nb2\n")
        # Attempt 3 surely opened after the rotation (an attempt 2 may have opened before).
        daemon.wait_for("job.attempt_failed", job="app", attempt=3)
        (root / "plugins" / "switch").unlink()
        delivered = _delivered_when_caught_up(daemon, root, expected=8)
    finally:
        daemon.stop()
    assert delivered == ["a0", "a1", "a2", "a3", "a4", "b0", "b1", "b2"]


def test_a_retry_of_a_job_started_at_the_end_keeps_what_was_appended_since(
    tmp_path: Path,
) -> None:
    daemon, root = _start(tmp_path, "end", ["old0", "old1"])
    try:
        daemon.wait_for("job.state_changed", job="app", to="running")
        log = root / "in" / "app.log"
        with log.open("a") as file:
            file.write("c0\n")
        daemon.wait_for("job.attempt_failed", job="app")  # c0 read, then the processor failed
        with log.open("a") as file:
            file.write("c1\nc2\n")
        (root / "plugins" / "switch").unlink()
        delivered = _delivered_when_caught_up(daemon, root, expected=3)
    finally:
        daemon.stop()
    assert delivered == ["c0", "c1", "c2"]
