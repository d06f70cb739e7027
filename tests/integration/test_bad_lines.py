"""Lines a `jsonl` file source cannot decode go through the job's `[records]` policy,
with the real daemon: skipped, dead-lettered, or failing the job with a cause that
names the file and byte. One bad line in a log must never wedge a job silently."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.daemon_process import DaemonProcess, write_config

pytestmark = pytest.mark.slow

LINES = ['{"n": 1}', "{not json", '{"n": 2}', "", '{"n": 3']


def _run(tmp_path: Path, records: str) -> DaemonProcess:
    (tmp_path / "in.jsonl").write_text("\n".join(LINES) + "\n")
    job = f"""
        suspend_on_failure = true
        [source]
        type = "file"
        path = "../in.jsonl"
        format = "jsonl"
        follow = false
        [sink]
        type = "jsonl"
        path = "../out.jsonl"
        [retry]
        initial = "10ms"
        max = "10ms"
        max_attempts = 2
        [records]
        {records}
    """
    config = write_config(tmp_path, {"lines": job})
    return DaemonProcess(config, "--exit-when-idle")


def _out(tmp_path: Path) -> list[object]:
    return [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]


def test_skip_passes_the_good_lines_and_counts_the_bad(tmp_path: Path) -> None:
    """on_error = "skip": the job finishes with every good line; each bad one is logged."""
    daemon = _run(tmp_path, 'on_error = "skip"')
    rejected = daemon.wait_for("job.record_rejected", count=2)
    assert daemon.finish() == 0
    assert rejected["rejected"] == 2
    assert _out(tmp_path) == [{"n": 1}, {"n": 2}]
    assert any(e.get("to") == "finished" for e in daemon.events)


def test_dead_letter_keeps_the_raw_lines_and_their_errors(tmp_path: Path) -> None:
    """on_error = "dead_letter": each bad line lands in the file, as read, with its byte."""
    daemon = _run(tmp_path, 'on_error = "dead_letter"\ndead_letter = "../rejects.jsonl"')
    assert daemon.finish() == 0
    assert _out(tmp_path) == [{"n": 1}, {"n": 2}]
    dead = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [d["record"] for d in dead] == ["{not json", '{"n": 3']
    assert f"byte 9 of {tmp_path / 'in.jsonl'}" in dead[0]["error"]


def test_fail_suspends_with_a_cause_naming_file_and_byte(tmp_path: Path) -> None:
    """on_error = "fail": the job gives up SUSPENDED, the cause names the line; nothing lost."""
    daemon = _run(tmp_path, 'on_error = "fail"')
    suspended = daemon.wait_for("job.state_changed", to="suspended")
    assert daemon.finish() == 1  # --exit-when-idle: a job ended SUSPENDED
    assert f"byte 9 of {tmp_path / 'in.jsonl'}" in suspended["cause"]
    snapshot = tomllib.loads((tmp_path / "state" / "lines.snapshot.toml").read_text())
    assert snapshot["state"] == "suspended"
