"""Journal priorities on log lines, without systemd: the `<N>` prefix journald reads.

Defect reproduced (issue 15): under systemd every line reached the journal at
priority 6 (info), errors included, so `journalctl -p err` missed
`daemon.reload_refused`. tests/system/test_live_systemd.py checks the same under
a real journald.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from supervisor.logs import is_journal_stream, journal_priority

# Logs one event per level, then one with a traceback, through configure_logging
# writing to stderr (which the test points at a file).
_LOG_SOME = """
import sys
import structlog
from supervisor.logs import configure_logging
configure_logging(sys.argv[1], "debug")
log = structlog.get_logger("test")
log.debug("t.debug")
log.info("t.info")
log.warning("t.warning")
log.error("t.error", job="orders")
log.critical("t.critical")
try:
    raise ValueError("boom")
except ValueError:
    log.exception("t.exception")
"""


def _log_to_file(path: Path, log_format: str, journal_stream: str | None) -> list[str]:
    env = {key: value for key, value in os.environ.items() if key != "JOURNAL_STREAM"}
    with path.open("w") as stderr:
        if journal_stream == "this file":
            status = os.fstat(stderr.fileno())
            journal_stream = f"{status.st_dev}:{status.st_ino}"
        if journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        subprocess.run(
            [sys.executable, "-c", _LOG_SOME, log_format],
            stderr=stderr,
            env=env,
            check=True,
            timeout=60,
        )
    return path.read_text().splitlines()


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        ("debug", 7),
        ("info", 6),
        ("warning", 4),
        ("error", 3),
        ("critical", 2),
        ("ERROR", 3),
        ("no-such-level", 6),
    ],
)
def test_each_level_has_its_syslog_priority(level: str, priority: int) -> None:
    """Each structlog level maps to its syslog(3) priority; an unknown one is info."""
    assert journal_priority(level) == priority


def test_a_stream_is_the_journal_only_when_journal_stream_names_its_inode(tmp_path: Path) -> None:
    """`$JOURNAL_STREAM` counts only if its device:inode is the stream's own."""
    with (tmp_path / "a").open("w") as a, (tmp_path / "b").open("w") as b:
        status = os.fstat(a.fileno())
        names_a = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert is_journal_stream(a, names_a)
        assert not is_journal_stream(b, names_a)  # inherited by a child whose output is elsewhere
        assert not is_journal_stream(a, {})
        assert not is_journal_stream(a, {"JOURNAL_STREAM": "not-a-pair"})
        assert not is_journal_stream(io.StringIO(), names_a)  # no file descriptor at all


def test_json_lines_to_the_journal_carry_their_priority(tmp_path: Path) -> None:
    """Each JSON line written to the journal stream starts with its level's `<N>`."""
    lines = _log_to_file(tmp_path / "journal", "json", "this file")
    prefixes = {line[line.index('"event": "') + 10 :].split('"')[0]: line[:3] for line in lines}
    assert prefixes == {
        "t.debug": "<7>",
        "t.info": "<6>",
        "t.warning": "<4>",
        "t.error": "<3>",
        "t.critical": "<2>",
        "t.exception": "<3>",
    }
    assert all(line[3] == "{" for line in lines), lines  # the JSON follows the prefix at once


def test_every_line_of_a_console_traceback_carries_the_priority(tmp_path: Path) -> None:
    """A multi-line console event (a traceback) is filed at its priority line by line."""
    lines = _log_to_file(tmp_path / "journal", "console", "this file")
    start = next(i for i, line in enumerate(lines) if "t.exception" in line)
    assert len(lines[start:]) > 3
    assert all(line.startswith("<3>") for line in lines[start:]), lines[start:]


@pytest.mark.parametrize("journal_stream", [None, "1:2"])
def test_lines_elsewhere_have_no_prefix(tmp_path: Path, journal_stream: str | None) -> None:
    """Output that is not the journal stream (a file, a pipe) gets no `<N>` prefix."""
    lines = _log_to_file(tmp_path / "out", "json", journal_stream)
    assert len(lines) == 6
    assert all(line.startswith("{") for line in lines), lines
