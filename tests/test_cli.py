"""The `supervisor` command itself, as a subprocess: exit codes and messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFIGS = Path(__file__).parent.parent / "configs"


def _supervisor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_accepts_the_shipped_example() -> None:
    """`supervisor check` on configs/ exits 0 and names the jobs."""
    result = _supervisor("check", "-c", str(CONFIGS / "supervisor.toml"))
    assert result.returncode == 0, result.stderr
    assert "countdown, counter, orders" in result.stdout


def test_check_and_run_refuse_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    """A bad job file makes `check` and `run` exit 2 with the file and key, no traceback."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "supervisor.toml").write_text("")
    (tmp_path / "jobs" / "a.toml").write_text('[source]\ntype = "generate"\nrat = 5\n')
    for command in ("check", "run"):
        result = _supervisor(command, "-c", str(tmp_path / "supervisor.toml"))
        assert result.returncode == 2
        assert f'{tmp_path}/jobs/a.toml: source.rat: unknown key "rat"; did you mean "rate"?' in (
            result.stderr
        )
        assert f"{tmp_path}/jobs/a.toml: sink: required table [sink] is missing" in result.stderr
        assert "Traceback" not in result.stderr


def test_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    """A daemon file that does not exist is exit 2, naming it."""
    result = _supervisor("check", "-c", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert f"{tmp_path}/nope.toml: cannot read" in result.stderr


def test_no_command_is_a_usage_error() -> None:
    """Running `supervisor` with no command prints usage and exits 2."""
    result = _supervisor()
    assert result.returncode == 2
    assert "usage: supervisor" in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """`supervisor check | head -0`: output to a pipe nobody reads any more is exit 1 with
    no traceback (none from the interpreter's last flush either), as a pipeline expects."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "supervisor", "check", "-c", str(CONFIGS / "supervisor.toml")],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1
    assert result.stderr == ""
