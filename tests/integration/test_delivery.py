"""Delivery across crashes and clean stops, with the real daemon and real files.

SIGKILL may repeat only the records after the last checkpoint; SIGTERM repeats
none; the sqlite sink, which commits its offset with the rows, repeats none
either way.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from supervisor.connectors.sqlite.sink import table_rows
from tests.daemon_process import DaemonProcess, write_config

pytestmark = pytest.mark.slow

COUNT = 12_000


def _job(sink: str) -> str:
    return f"""
        [source]
        type = "generate"
        count = {COUNT}
        rate = 8000

        [sink]
        {sink}

        [checkpoint]
        every_records = 1000
        interval = "10s"
    """


def _committed_offset(root: Path, job: str) -> int:
    text = (root / "state" / f"{job}.snapshot.toml").read_text()
    return int(next(line for line in text.splitlines() if line.startswith("offset")).split("=")[1])


def _jsonl_seqs(path: Path) -> list[int]:
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def _interrupt_then_finish(config: Path, sig: signal.Signals) -> DaemonProcess:
    daemon = DaemonProcess(config, "--exit-when-idle")
    daemon.wait_for("job.checkpoint", count=3)
    if sig is signal.SIGKILL:
        daemon.kill()
    else:
        daemon.process.send_signal(sig)
        assert daemon.finish() == 0
    return daemon


def test_sigkill_repeats_only_records_after_the_last_checkpoint(tmp_path: Path) -> None:
    """After kill -9 and a restart nothing is missing; repeats lie after the committed offset."""
    config = write_config(tmp_path, {"seq": _job('type = "jsonl"\npath = "../out.jsonl"')})
    _interrupt_then_finish(config, signal.SIGKILL)
    committed = _committed_offset(tmp_path, "seq")
    # Complete lines only: a line torn by the kill is cut off by the sink on restart.
    written_before_restart = (tmp_path / "out.jsonl").read_bytes().count(b"\n")

    assert DaemonProcess(config, "--exit-when-idle").finish() == 0

    seqs = _jsonl_seqs(tmp_path / "out.jsonl")
    assert sorted(set(seqs)) == list(range(COUNT))
    repeats = [seq for seq, n in Counter(seqs).items() if n > 1]
    assert all(committed <= seq < written_before_restart for seq in repeats)
    assert max(Counter(seqs).values()) <= 2


def test_sigterm_then_restart_repeats_nothing(tmp_path: Path) -> None:
    """A clean stop checkpoints everything it wrote, so a restart repeats no record."""
    config = write_config(tmp_path, {"seq": _job('type = "jsonl"\npath = "../out.jsonl"')})
    _interrupt_then_finish(config, signal.SIGTERM)
    assert _committed_offset(tmp_path, "seq") < COUNT

    assert DaemonProcess(config, "--exit-when-idle").finish() == 0

    assert _jsonl_seqs(tmp_path / "out.jsonl") == list(range(COUNT))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_sqlite_sink_is_exactly_once(tmp_path: Path, sig: signal.Signals) -> None:
    """With the offset committed in the sink's transaction, no record is repeated or lost."""
    config = write_config(tmp_path, {"seq": _job('type = "sqlite"\npath = "../out.db"')})
    _interrupt_then_finish(config, sig)

    assert DaemonProcess(config, "--exit-when-idle").finish() == 0

    rows = [json.loads(row)["seq"] for row in table_rows(tmp_path / "out.db")]
    assert rows == list(range(COUNT))
