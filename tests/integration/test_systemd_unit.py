"""The systemd unit file: systemd's own verifier accepts it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parent.parent.parent / "systemd" / "stream-supervisor.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` reports nothing, with ExecStart pointing at a real binary."""
    supervisor = Path(sys.executable).parent / "supervisor"
    unit = tmp_path / UNIT.name
    unit.write_text(
        UNIT.read_text().replace("/opt/stream-supervisor/bin/supervisor", str(supervisor))
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_unit_stops_later_than_the_default_shutdown_timeout() -> None:
    """TimeoutStopSec leaves room for the daemon's 20 s graceful shutdown."""
    lines = dict(
        line.split("=", 1)
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert lines["Type"] == "notify"
    assert int(lines["TimeoutStopSec"].rstrip("s")) > 20
